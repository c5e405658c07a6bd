//! Opening a CUDA device and loading the embedded kernels on it.

use super::{FATBINS, KERNELS_BUILT};
use crate::error::{MoeError, Result};
use crate::raw::Stream;
use cudarc::driver::sys::{CUdevice_attribute, CUfunction_attribute};
use cudarc::driver::{
    CudaContext, CudaFunction, CudaModule, CudaStream, DeviceSlice, LaunchConfig,
};
use cudarc::nvrtc::Ptx;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

/// Oldest GPU architecture the embedded kernels run on (sm_80, Ampere); newer ones JIT the PTX.
const MIN_COMPUTE_CAPABILITY: (i32, i32) = (8, 0);

/// Whether the CUDA driver library (`libcuda.so` or `libcuda.so.1`; `nvcuda.dll` on Windows) can be
/// opened, which [`Device::new`] asks before cudarc loads it (cudarc panics when it cannot).
///
/// cudarc's own probe exists only when it loads the driver at run time; this one also serves builds
/// where another crate of the graph made cudarc link the driver (it is then loaded already).
pub fn driver_library_present() -> bool {
    cuda_library_present("cuda")
}

/// Whether the CUDA library `name` (`cuda` for the driver, `cublas`, `curand`, ...) can be opened
/// under one of the names it is installed as (`lib<name>.so` and its versioned names;
/// `<name>64_<major>.dll` on Windows), all of which cudarc also tries. Like
/// [`driver_library_present`], it serves whether cudarc loads the library at run time or links it.
pub fn cuda_library_present(name: &str) -> bool {
    let names: Vec<String> = if cfg!(windows) {
        if name == "cuda" {
            vec!["nvcuda.dll".into()]
        } else {
            ["13", "12", "11"]
                .iter()
                .map(|major| format!("{name}64_{major}.dll"))
                .collect()
        }
    } else {
        ["", ".1", ".13", ".12", ".11"]
            .iter()
            .map(|suffix| format!("lib{name}.so{suffix}"))
            .collect()
    };
    names.iter().any(|name| {
        // SAFETY: opening a CUDA library runs only its initialisers, as cudarc's loading of it
        // would; no symbol is called and the handle is dropped at once.
        unsafe { libloading::Library::new(name) }.is_ok()
    })
}

/// A CUDA device with this crate's kernels: a context, the stream every launch goes to, and the
/// kernel modules, each loaded on first use.
///
/// Every launch wrapper takes a `&Device` and enqueues work on [`Device::stream`] without waiting
/// for it; buffers may be allocated on any stream of the same context (cudarc orders the accesses).
///
/// # Borrowing an engine's context and stream
///
/// An engine owns its context and streams. [`Device::from_stream`] wraps one of its cudarc streams
/// (and so its context): every launch then goes to exactly that stream, and the crate creates no
/// stream of its own. The only state a `Device` adds is its cache of loaded kernel modules, one per
/// context; [`Device::on_stream`] gives another stream of the same context that shares it, so an
/// engine with a stream per request loads the modules once.
///
/// Lifetimes: a `Device` holds an `Arc` of its stream and of the context, which stay alive as long
/// as it does; buffers used with it must come from the same context (checked on every call). The
/// loaded modules are unloaded when the last `Device` sharing them is dropped, which must happen
/// before the engine destroys the context by other means than cudarc's reference counting.
#[derive(Debug)]
pub struct Device {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    /// Compute capability (major, minor).
    compute_capability: (i32, i32),
    /// Streaming multiprocessors.
    sm_count: u32,
    /// Shared memory one block may use after opting in, in bytes.
    max_smem_optin: usize,
    /// Loaded kernel functions by name, and the modules (kernel families) they come from; shared by
    /// the devices [`Device::on_stream`] made from one another.
    loaded: Arc<Mutex<Loaded>>,
}

#[derive(Debug, Default)]
struct Loaded {
    modules: HashMap<&'static str, Arc<CudaModule>>,
    functions: HashMap<&'static str, CudaFunction>,
    /// Kernels prepared for launches with dynamic shared memory: blocks resident on the whole GPU.
    resident: HashMap<&'static str, u32>,
}

impl Device {
    /// Open CUDA device `ordinal` (0 for the first GPU).
    ///
    /// Errors, never panics: [`MoeError::KernelsNotBuilt`] when this build has no kernels (nvcc was
    /// missing at build time), [`MoeError::NoCudaDevice`] when the CUDA driver library is missing or
    /// the device cannot be opened, [`MoeError::Unsupported`] for a GPU older than sm_80.
    pub fn new(ordinal: usize) -> Result<Self> {
        if !KERNELS_BUILT {
            return Err(MoeError::KernelsNotBuilt);
        }
        if !driver_library_present() {
            return Err(MoeError::NoCudaDevice(
                "the CUDA driver library (libcuda) was not found".into(),
            ));
        }
        let ctx = CudaContext::new(ordinal).map_err(|e| {
            MoeError::NoCudaDevice(format!("cannot open CUDA device {ordinal}: {e}"))
        })?;
        let stream = ctx.new_stream()?;
        Self::from_stream(stream)
    }

    /// This crate's kernels on an existing stream, typically an engine's (candle's
    /// `CudaDevice::cuda_stream()`, for one): its context is the stream's, and every launch goes to
    /// this stream. See the type's docs for the lifetime rules.
    ///
    /// Errors, never panics: [`MoeError::KernelsNotBuilt`] when this build has no kernels,
    /// [`MoeError::Unsupported`] for a GPU older than sm_80, [`MoeError::Cuda`] when the driver
    /// cannot be queried.
    pub fn from_stream(stream: Arc<CudaStream>) -> Result<Self> {
        if !KERNELS_BUILT {
            return Err(MoeError::KernelsNotBuilt);
        }
        let ctx = stream.context().clone();
        let cc = ctx.compute_capability()?;
        if cc < MIN_COMPUTE_CAPABILITY {
            return Err(MoeError::Unsupported(format!(
                "CUDA device {} has compute capability {}.{}; the kernels need {}.{} or newer",
                ctx.ordinal(),
                cc.0,
                cc.1,
                MIN_COMPUTE_CAPABILITY.0,
                MIN_COMPUTE_CAPABILITY.1
            )));
        }
        let sm_count =
            ctx.attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
        let max_smem_optin = ctx
            .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)?;
        Ok(Device {
            ctx,
            stream,
            compute_capability: cc,
            sm_count: u32::try_from(sm_count).unwrap_or(1).max(1),
            max_smem_optin: usize::try_from(max_smem_optin).unwrap_or(0),
            loaded: Arc::default(),
        })
    }

    /// The same device on another stream of its context, sharing the loaded kernel modules.
    ///
    /// Errors: [`MoeError::Unsupported`] when `stream` belongs to another context.
    pub fn on_stream(&self, stream: Arc<CudaStream>) -> Result<Self> {
        if **stream.context() != *self.ctx {
            return Err(MoeError::Unsupported(
                "the stream belongs to another CUDA context than the device".into(),
            ));
        }
        Ok(Device {
            ctx: self.ctx.clone(),
            stream,
            compute_capability: self.compute_capability,
            sm_count: self.sm_count,
            max_smem_optin: self.max_smem_optin,
            loaded: self.loaded.clone(),
        })
    }

    /// The CUDA context.
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// The stream kernels are launched on; allocate and copy buffers with it (`clone_htod`,
    /// `clone_dtoh`, `alloc_zeros`, ...).
    pub fn stream(&self) -> &Arc<CudaStream> {
        &self.stream
    }

    /// [`Device::stream`] as the driver's handle, for the [`raw`](crate::raw) layer.
    pub fn raw_stream(&self) -> Stream {
        self.stream.cu_stream().cast()
    }

    /// Launch `func` on `stream` with `params` as its one by-value parameter, with this device's
    /// context current on the calling thread. Every kernel of the crate takes one parameter struct.
    ///
    /// # Safety
    ///
    /// `func` must be a kernel of this device's context whose only parameter is a `P` (a
    /// `#[repr(C)]` struct of the ABI header), every pointer in `params` must be valid for what the
    /// kernel does with it at the sizes `params` states until the launch completes, `launch` must
    /// follow the kernel's contract (block size, shared memory), and `stream` must be a stream of
    /// this context (or null, the legacy default stream).
    pub(crate) unsafe fn launch<P>(
        &self,
        stream: Stream,
        func: &CudaFunction,
        launch: LaunchConfig,
        params: &P,
    ) -> Result<()> {
        self.ctx.bind_to_thread()?;
        let mut args = [params as *const P as *mut std::ffi::c_void];
        // SAFETY: the caller's contract above; the driver copies the parameter bytes at the call.
        unsafe {
            cudarc::driver::result::launch_kernel(
                func.cu_function(),
                launch.grid_dim,
                launch.block_dim,
                launch.shared_mem_bytes,
                stream.cast(),
                &mut args,
            )
        }?;
        Ok(())
    }

    /// Wait until all work enqueued on [`Device::stream`] has finished.
    pub fn synchronize(&self) -> Result<()> {
        Ok(self.stream.synchronize()?)
    }

    /// Check that `buffer` was allocated in this device's context, naming it as `what` otherwise.
    pub(crate) fn check_owns<T>(&self, what: &str, buffer: &impl DeviceSlice<T>) -> Result<()> {
        if **buffer.stream().context() == *self.ctx {
            Ok(())
        } else {
            Err(MoeError::Unsupported(format!(
                "`{what}` was allocated in another CUDA context than the device it is used on"
            )))
        }
    }

    /// The GPU's compute capability (major, minor): (9, 0) for an H100 or H200.
    pub fn compute_capability(&self) -> (i32, i32) {
        self.compute_capability
    }

    /// Streaming multiprocessors of this GPU.
    pub fn sm_count(&self) -> u32 {
        self.sm_count
    }

    /// Kernel `name` of `family`, ready for launches of `threads` threads with `dynamic_smem` bytes of
    /// dynamic shared memory (the opt-in attribute is set), and how many of its blocks the whole GPU
    /// holds at once at that shape. The driver is asked once per kernel; every kernel name is
    /// launched with one shape, so later calls are a map look-up.
    ///
    /// Errors: [`MoeError::Unsupported`] when the block needs more shared memory than the GPU
    /// allows, and the errors of [`Device::function`].
    pub(crate) fn prepared_function(
        &self,
        family: &'static str,
        name: &'static str,
        threads: u32,
        dynamic_smem: u32,
    ) -> Result<(CudaFunction, u32)> {
        let func = self.function(family, name)?;
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(&resident) = loaded.resident.get(name) {
            return Ok((func, resident));
        }
        let static_smem = usize::try_from(func.shared_size_bytes()?).unwrap_or(usize::MAX);
        let total = static_smem.saturating_add(dynamic_smem as usize);
        if total > self.max_smem_optin {
            return Err(MoeError::Unsupported(format!(
                "kernel {name} needs {total} bytes of shared memory per block; this GPU allows {}",
                self.max_smem_optin
            )));
        }
        self.ctx.bind_to_thread()?;
        // dynamic_smem <= max_smem_optin, which came from an i32.
        func.set_attribute(
            CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
            dynamic_smem as i32,
        )?;
        let per_sm = func
            .occupancy_max_active_blocks_per_multiprocessor(threads, dynamic_smem as usize, None)?
            .max(1);
        let resident = per_sm.saturating_mul(self.sm_count);
        loaded.resident.insert(name, resident);
        Ok((func, resident))
    }

    /// Kernel `name` from the kernel family (`kernels/<family>.cu`) that defines it, loading the
    /// family's module on first use.
    pub(crate) fn function(
        &self,
        family: &'static str,
        name: &'static str,
    ) -> Result<CudaFunction> {
        let mut loaded = self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(f) = loaded.functions.get(name) {
            return Ok(f.clone());
        }
        let module = match loaded.modules.get(family) {
            Some(m) => m.clone(),
            None => {
                let image = FATBINS
                    .iter()
                    .find(|(n, _)| *n == family)
                    .map(|(_, bytes)| *bytes)
                    .ok_or(MoeError::KernelsNotBuilt)?;
                // cuModuleLoadData takes a fatbin image as well as PTX text; cudarc's loader wants
                // an owned copy of it.
                let module = self.ctx.load_module(Ptx::from_binary(image.to_vec()))?;
                loaded.modules.insert(family, module.clone());
                module
            }
        };
        let f = module.load_function(name)?;
        loaded.functions.insert(name, f.clone());
        Ok(f)
    }
}
