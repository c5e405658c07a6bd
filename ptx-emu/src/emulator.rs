//! The emulated GPU as a Rust API: memory, modules, kernels and launches, with the driver's launch
//! validation. The C driver API in [`crate::driver`] is a thin layer over it; tests of the emulator
//! use it directly.

use crate::device::DeviceSpec;
use crate::exec::finding::Finding;
use crate::exec::interp::{self, Checks, ExecOptions, LaunchShape, LaunchSummary};
use crate::exec::kernel::{Kernel, ModuleData};
use crate::exec::memory::GlobalMemory;
use crate::exec::stats::InstrStats;
use crate::fatbin::{self, ImageKind};
use crate::profile::Profile;
use crate::ptx;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

/// CUDA driver error codes the emulator's API returns.
pub mod errors {
    /// CUDA_ERROR_INVALID_VALUE
    pub const INVALID_VALUE: u32 = 1;
    /// CUDA_ERROR_OUT_OF_MEMORY
    pub const OUT_OF_MEMORY: u32 = 2;
    /// CUDA_ERROR_INVALID_IMAGE
    pub const INVALID_IMAGE: u32 = 200;
    /// CUDA_ERROR_NO_BINARY_FOR_GPU
    pub const NO_BINARY_FOR_GPU: u32 = 209;
    /// CUDA_ERROR_INVALID_PTX
    pub const INVALID_PTX: u32 = 218;
    /// CUDA_ERROR_NOT_FOUND
    pub const NOT_FOUND: u32 = 500;
    /// CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES
    pub const LAUNCH_OUT_OF_RESOURCES: u32 = 701;
}

/// A failed API call: the CUDA error code and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EmuError {
    /// The CUDA driver error code.
    pub code: u32,
    /// What went wrong.
    pub message: String,
    /// The finding, when a check failed the launch.
    pub finding: Option<Box<Finding>>,
}

impl EmuError {
    /// An error with a code and message.
    pub fn new(code: u32, message: impl Into<String>) -> Self {
        EmuError {
            code,
            message: message.into(),
            finding: None,
        }
    }
}

impl std::fmt::Display for EmuError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (CUDA error {})", self.message, self.code)
    }
}

impl std::error::Error for EmuError {}

impl From<Box<Finding>> for EmuError {
    fn from(f: Box<Finding>) -> Self {
        EmuError {
            code: f.error,
            message: f.to_string(),
            finding: Some(f),
        }
    }
}

/// A loaded module: its parsed PTX and the device data of its variables.
pub struct Module {
    ptx: ptx::ir::Module,
    data: ModuleData,
    files: Arc<HashMap<u32, String>>,
    kernels: Mutex<HashMap<String, Arc<Kernel>>>,
}

impl Module {
    /// The names of the module's kernels.
    pub fn kernel_names(&self) -> Vec<String> {
        self.ptx
            .functions
            .iter()
            .filter(|f| f.is_entry && f.defined)
            .map(|f| f.name.clone())
            .collect()
    }

    /// The device address and size of module variable `name` (`.global` variables only).
    pub fn global(&self, name: &str) -> Option<(u64, u64)> {
        let (i, v) = self
            .ptx
            .variables
            .iter()
            .enumerate()
            .find(|(_, v)| v.name == name)?;
        match self.data.var_addr[i] {
            Some(crate::exec::kernel::SymbolValue::Global(a)) => Some((a, v.size)),
            _ => None,
        }
    }
}

/// A kernel with its function attributes (the handle `cuModuleGetFunction` returns).
pub struct Function {
    /// The prepared kernel.
    pub kernel: Arc<Kernel>,
    max_dynamic_smem: AtomicU32,
}

/// Function attributes (CUfunction_attribute values).
pub mod attributes {
    /// CU_FUNC_ATTRIBUTE_MAX_THREADS_PER_BLOCK
    pub const MAX_THREADS_PER_BLOCK: u32 = 0;
    /// CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES
    pub const SHARED_SIZE_BYTES: u32 = 1;
    /// CU_FUNC_ATTRIBUTE_CONST_SIZE_BYTES
    pub const CONST_SIZE_BYTES: u32 = 2;
    /// CU_FUNC_ATTRIBUTE_LOCAL_SIZE_BYTES
    pub const LOCAL_SIZE_BYTES: u32 = 3;
    /// CU_FUNC_ATTRIBUTE_NUM_REGS
    pub const NUM_REGS: u32 = 4;
    /// CU_FUNC_ATTRIBUTE_PTX_VERSION
    pub const PTX_VERSION: u32 = 5;
    /// CU_FUNC_ATTRIBUTE_BINARY_VERSION
    pub const BINARY_VERSION: u32 = 6;
    /// CU_FUNC_ATTRIBUTE_CACHE_MODE_CA
    pub const CACHE_MODE_CA: u32 = 7;
    /// CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
    pub const MAX_DYNAMIC_SHARED_SIZE_BYTES: u32 = 8;
    /// CU_FUNC_ATTRIBUTE_PREFERRED_SHARED_MEMORY_CARVEOUT
    pub const PREFERRED_SHARED_MEMORY_CARVEOUT: u32 = 9;
}

/// The emulated GPU.
pub struct Emulator {
    spec: DeviceSpec,
    memory: GlobalMemory,
    options: ExecOptions,
    profile: Option<Mutex<Profile>>,
}

/// The grid, block and dynamic shared memory of a launch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LaunchDims {
    /// Grid dimensions.
    pub grid: [u32; 3],
    /// Block dimensions.
    pub block: [u32; 3],
    /// Dynamic shared memory bytes.
    pub dynamic_smem: u32,
}

impl Emulator {
    /// An emulator of `spec` with every check on.
    pub fn new(spec: DeviceSpec) -> Self {
        Emulator {
            spec,
            memory: GlobalMemory::default(),
            options: ExecOptions {
                checks: Checks::ALL,
                seed: 0x5eed,
                max_instructions: 20_000_000_000,
                sm_count: 0,
                count: false,
            },
            profile: None,
        }
    }

    /// The emulator the environment asks for: `PTX_EMU_DEVICE` (h200 or a100),
    /// `PTX_EMU_CHECKS` (comma-separated subset of memcheck,racecheck,initcheck,synccheck, or
    /// `none`), `PTX_EMU_SEED` (block order), `PTX_EMU_MAX_INSTRUCTIONS` (per launch) and
    /// `PTX_EMU_PROFILE` (a path prefix: counters are collected and written to
    /// `<prefix>.json` and `<prefix>.md` by [`Emulator::write_profile`]; `%p` in it becomes the
    /// process id).
    pub fn from_env() -> Result<Self, String> {
        let mut e = Emulator::new(DeviceSpec::from_env()?);
        if let Ok(v) = std::env::var("PTX_EMU_CHECKS") {
            e.options.checks = parse_checks(&v)?;
        }
        if let Ok(v) = std::env::var("PTX_EMU_SEED") {
            e.options.seed = v
                .parse()
                .map_err(|_| format!("PTX_EMU_SEED={v}: not a number"))?;
        }
        if let Ok(v) = std::env::var("PTX_EMU_MAX_INSTRUCTIONS") {
            e.options.max_instructions = v
                .parse()
                .map_err(|_| format!("PTX_EMU_MAX_INSTRUCTIONS={v}: not a number"))?;
        }
        if let Ok(p) = std::env::var("PTX_EMU_PROFILE") {
            if !p.is_empty() {
                e.enable_profile(p);
            }
        }
        Ok(e)
    }

    /// Collect per-instruction counters, to be written under `prefix` (see
    /// [`Emulator::write_profile`]).
    pub fn enable_profile(&mut self, prefix: impl Into<String>) {
        self.options.count = true;
        self.profile = Some(Mutex::new(Profile::new(prefix.into(), self.spec.name)));
    }

    /// Count memory efficiency (sectors, wavefronts) in each launch's [`LaunchSummary`].
    pub fn enable_counters(&mut self) {
        self.options.count = true;
    }

    /// Turn checks on or off.
    pub fn set_checks(&mut self, checks: Checks) {
        self.options.checks = checks;
    }

    /// Set the seed of the block order.
    pub fn set_seed(&mut self, seed: u64) {
        self.options.seed = seed;
    }

    /// The emulated device.
    pub fn spec(&self) -> &DeviceSpec {
        &self.spec
    }

    /// Device memory.
    pub fn memory(&self) -> &GlobalMemory {
        &self.memory
    }

    /// Load a module from a fatbin image (its PTX for this device is chosen and parsed) or from
    /// PTX text.
    pub fn load_module(&self, image: &[u8]) -> Result<Arc<Module>, EmuError> {
        let text: String =
            match fatbin::image_kind(image) {
                ImageKind::Fatbin => {
                    let entries = fatbin::parse_fatbin(image)
                        .map_err(|e| EmuError::new(errors::INVALID_IMAGE, e.to_string()))?;
                    fatbin::select_ptx(&entries, self.spec.sm())
                        .map_err(|e| EmuError::new(errors::NO_BINARY_FOR_GPU, e.to_string()))?
                        .to_string()
                }
                ImageKind::PtxText => {
                    let end = image.iter().position(|&b| b == 0).unwrap_or(image.len());
                    std::str::from_utf8(&image[..end])
                        .map_err(|_| EmuError::new(errors::INVALID_PTX, "PTX text is not UTF-8"))?
                        .to_string()
                }
                ImageKind::Elf => return Err(EmuError::new(
                    errors::NO_BINARY_FOR_GPU,
                    "a cubin (machine code) cannot be emulated; load PTX or a fatbin holding PTX",
                )),
                _ => {
                    return Err(EmuError::new(
                        errors::INVALID_IMAGE,
                        "the image is neither a fatbin nor PTX text",
                    ))
                }
            };
        self.load_ptx(&text)
    }

    /// Load a module from PTX text.
    pub fn load_ptx(&self, text: &str) -> Result<Arc<Module>, EmuError> {
        let parsed = ptx::parse(text).map_err(|e| {
            EmuError::new(
                errors::INVALID_PTX,
                format!("PTX line {}: {}", e.line, e.message),
            )
        })?;
        let data = ModuleData::load(&parsed, &self.memory)
            .map_err(|e| EmuError::new(errors::INVALID_PTX, e))?;
        let files = Arc::new(parsed.files.clone());
        Ok(Arc::new(Module {
            ptx: parsed,
            data,
            files,
            kernels: Mutex::new(HashMap::new()),
        }))
    }

    /// Free the device memory of a module's variables.
    pub fn unload_module(&self, module: &Module) {
        for a in &module.data.allocations {
            self.memory.free(*a);
        }
    }

    /// Kernel `name` of `module`.
    pub fn function(&self, module: &Module, name: &str) -> Result<Arc<Function>, EmuError> {
        let mut cache = module.kernels.lock().unwrap_or_else(|e| e.into_inner());
        let kernel = match cache.get(name) {
            Some(k) => k.clone(),
            None => {
                let k = Kernel::prepare(&module.ptx, &module.data, name, module.files.clone())
                    .map_err(|e| {
                        let code = if e.starts_with("no function") {
                            errors::NOT_FOUND
                        } else {
                            errors::INVALID_PTX
                        };
                        EmuError::new(code, e)
                    })?;
                let k = Arc::new(k);
                cache.insert(name.to_string(), k.clone());
                k
            }
        };
        let default_dyn = self.spec.smem_per_block.saturating_sub(kernel.static_smem);
        Ok(Arc::new(Function {
            kernel,
            max_dynamic_smem: AtomicU32::new(default_dyn),
        }))
    }

    /// The registers per thread the emulator assumes for occupancy: `.maxnreg`, else the budget
    /// `__launch_bounds__` gives (65536 / (max threads x min blocks), a multiple of 8, at most
    /// 255), else 64. ptxas may use fewer; the estimate errs towards lower occupancy.
    pub fn registers_per_thread(&self, f: &Function) -> u32 {
        let k = &f.kernel;
        if let Some(r) = k.max_regs {
            return r.min(255);
        }
        match (k.max_threads, k.min_blocks_per_sm) {
            (Some(t), Some(b)) if t > 0 && b > 0 => {
                ((self.spec.regs_per_sm / (t * b)).min(255) / 8 * 8).max(16)
            }
            _ => 64,
        }
    }

    /// A function attribute (CUfunction_attribute).
    pub fn function_attribute(&self, f: &Function, attr: u32) -> Result<i64, EmuError> {
        let k = &f.kernel;
        Ok(match attr {
            attributes::MAX_THREADS_PER_BLOCK => {
                let by_regs = self.spec.regs_per_sm / self.registers_per_thread(f).max(1) / 32 * 32;
                k.max_threads
                    .unwrap_or(self.spec.max_threads_per_block)
                    .min(self.spec.max_threads_per_block)
                    .min(by_regs) as i64
            }
            attributes::SHARED_SIZE_BYTES => k.static_smem as i64,
            attributes::CONST_SIZE_BYTES => k.const_bank.len() as i64,
            attributes::LOCAL_SIZE_BYTES => k.local_bytes as i64,
            attributes::NUM_REGS => self.registers_per_thread(f) as i64,
            attributes::PTX_VERSION | attributes::BINARY_VERSION => self.spec.sm() as i64,
            attributes::CACHE_MODE_CA => 0,
            attributes::MAX_DYNAMIC_SHARED_SIZE_BYTES => {
                f.max_dynamic_smem.load(Ordering::Relaxed) as i64
            }
            attributes::PREFERRED_SHARED_MEMORY_CARVEOUT => -1,
            _ => {
                return Err(EmuError::new(
                    errors::INVALID_VALUE,
                    format!("unknown function attribute {attr}"),
                ))
            }
        })
    }

    /// Set a function attribute. Only the dynamic shared memory limit (checked against the
    /// device's opt-in maximum) and the carveout hint are accepted.
    pub fn set_function_attribute(
        &self,
        f: &Function,
        attr: u32,
        value: i64,
    ) -> Result<(), EmuError> {
        match attr {
            attributes::MAX_DYNAMIC_SHARED_SIZE_BYTES => {
                let limit = self
                    .spec
                    .smem_per_block_optin
                    .saturating_sub(f.kernel.static_smem);
                if value < 0 || value > limit as i64 {
                    return Err(EmuError::new(
                        errors::INVALID_VALUE,
                        format!(
                            "{} bytes of dynamic shared memory requested for {}; the device allows {} ({} opt-in minus {} static)",
                            value, f.kernel.name, limit, self.spec.smem_per_block_optin, f.kernel.static_smem
                        ),
                    ));
                }
                f.max_dynamic_smem.store(value as u32, Ordering::Relaxed);
                Ok(())
            }
            attributes::PREFERRED_SHARED_MEMORY_CARVEOUT => Ok(()),
            _ => Err(EmuError::new(
                errors::INVALID_VALUE,
                format!("function attribute {attr} cannot be set"),
            )),
        }
    }

    /// Resident blocks per SM for `threads` threads and `dynamic_smem` bytes (the documented
    /// estimate: the minimum of the block, thread, register and shared-memory limits, registers
    /// allocated per warp in units of 256).
    pub fn occupancy(&self, f: &Function, threads: u32, dynamic_smem: u32) -> u32 {
        if threads == 0 {
            return 0;
        }
        let s = &self.spec;
        let warps = threads.div_ceil(32);
        let by_threads = s.max_threads_per_sm / (warps * 32);
        let regs_per_warp = (self.registers_per_thread(f) * 32).next_multiple_of(256);
        let by_regs = s.regs_per_sm / (regs_per_warp * warps).max(1);
        let smem = f.kernel.static_smem + dynamic_smem + s.smem_reserved_per_block;
        let by_smem = s.smem_per_sm / smem.max(1);
        s.max_blocks_per_sm
            .min(by_threads)
            .min(by_regs)
            .min(by_smem)
    }

    /// Check a launch as the driver does. Errors carry the driver's codes.
    pub fn validate(&self, f: &Function, dims: &LaunchDims, params: usize) -> Result<(), EmuError> {
        let s = &self.spec;
        let [gx, gy, gz] = dims.grid;
        let [bx, by, bz] = dims.block;
        let bad = |m: String| Err(EmuError::new(errors::INVALID_VALUE, m));
        if gx == 0 || gy == 0 || gz == 0 || gx > i32::MAX as u32 || gy > 65535 || gz > 65535 {
            return bad(format!(
                "grid ({gx}, {gy}, {gz}) is outside (1..=2^31-1, 1..=65535, 1..=65535)"
            ));
        }
        if bx == 0 || by == 0 || bz == 0 || bx > 1024 || by > 1024 || bz > 64 {
            return bad(format!(
                "block ({bx}, {by}, {bz}) is outside (1..=1024, 1..=1024, 1..=64)"
            ));
        }
        let threads = bx as u64 * by as u64 * bz as u64;
        if threads > s.max_threads_per_block as u64 {
            return bad(format!(
                "{threads} threads per block; the device allows {}",
                s.max_threads_per_block
            ));
        }
        let k = &f.kernel;
        if let Some(req) = k.reqntid {
            if req != dims.block {
                return bad(format!(
                    "kernel {} requires a block of {:?} (.reqntid)",
                    k.name, req
                ));
            }
        }
        let limit = self.function_attribute(f, attributes::MAX_THREADS_PER_BLOCK)? as u64;
        if threads > limit {
            return Err(EmuError::new(
                errors::LAUNCH_OUT_OF_RESOURCES,
                format!(
                    "{threads} threads per block; kernel {} allows {limit}",
                    k.name
                ),
            ));
        }
        let max_dyn = f.max_dynamic_smem.load(Ordering::Relaxed);
        if dims.dynamic_smem > max_dyn {
            return bad(format!(
                "{} bytes of dynamic shared memory for {}, whose limit is {} (raise CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES to go past {} bytes)",
                dims.dynamic_smem, k.name, max_dyn, s.smem_per_block
            ));
        }
        if k.static_smem as u64 + dims.dynamic_smem as u64 > s.smem_per_block_optin as u64 {
            return bad(format!(
                "{} bytes of shared memory per block; the device allows {}",
                k.static_smem as u64 + dims.dynamic_smem as u64,
                s.smem_per_block_optin
            ));
        }
        if params != k.param_bytes as usize {
            return bad(format!(
                "{} bytes of parameters for {}, which takes {}",
                params, k.name, k.param_bytes
            ));
        }
        Ok(())
    }

    /// Pack kernel arguments as the driver does from `kernelParams`: argument i is read from
    /// `args[i]` with the size of parameter i, at its aligned offset.
    ///
    /// # Safety
    /// `args` holds one readable pointer per kernel parameter, each to at least the parameter's
    /// size in bytes.
    pub unsafe fn pack_params(
        &self,
        f: &Function,
        args: &[*const u8],
    ) -> Result<Vec<u8>, EmuError> {
        let k = &f.kernel;
        if args.len() < k.params.len() {
            return Err(EmuError::new(
                errors::INVALID_VALUE,
                "missing kernel parameters",
            ));
        }
        let mut buf = vec![0u8; k.param_bytes as usize];
        for (p, &ptr) in k.params.iter().zip(args) {
            if ptr.is_null() {
                return Err(EmuError::new(
                    errors::INVALID_VALUE,
                    format!("parameter {} of {} is a null pointer", p.name, k.name),
                ));
            }
            let src = std::slice::from_raw_parts(ptr, p.size as usize);
            buf[p.offset as usize..(p.offset + p.size) as usize].copy_from_slice(src);
        }
        Ok(buf)
    }

    /// The number of parameters of a kernel.
    pub fn param_count(&self, f: &Function) -> usize {
        f.kernel.params.len()
    }

    /// Validate and run a launch to completion. A finding fails it with the finding's CUDA error.
    pub fn launch(
        &self,
        f: &Function,
        dims: &LaunchDims,
        params: &[u8],
    ) -> Result<LaunchSummary, EmuError> {
        self.validate(f, dims, params.len())?;
        let mut opts = self.options;
        opts.sm_count = self.spec.sm_count;
        let shape = LaunchShape {
            grid: dims.grid,
            block: dims.block,
            dynamic_smem: dims.dynamic_smem,
            params,
        };
        let mut stats: Vec<InstrStats> = Vec::new();
        let result = interp::run(&f.kernel, &shape, &self.memory, &opts, &mut stats);
        if let (Some(p), Ok(summary)) = (&self.profile, &result) {
            p.lock()
                .unwrap_or_else(|e| e.into_inner())
                .record(&f.kernel, &stats, summary);
        }
        Ok(result?)
    }

    /// Write the collected profile (JSON and Markdown) when profiling is on; returns the paths.
    pub fn write_profile(&self) -> Result<Option<(String, String)>, String> {
        match &self.profile {
            Some(p) => p
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .write()
                .map(Some),
            None => Ok(None),
        }
    }
}

/// Parse `PTX_EMU_CHECKS`.
pub fn parse_checks(v: &str) -> Result<Checks, String> {
    let mut c = Checks {
        memcheck: false,
        racecheck: false,
        initcheck: false,
        synccheck: false,
    };
    for part in v.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part {
            "all" => c = Checks::ALL,
            "none" => {}
            "memcheck" => c.memcheck = true,
            "racecheck" => c.racecheck = true,
            "initcheck" => c.initcheck = true,
            "synccheck" => c.synccheck = true,
            other => {
                return Err(format!(
                    "PTX_EMU_CHECKS: unknown check `{other}` (memcheck, racecheck, initcheck, synccheck, all, none)"
                ))
            }
        }
    }
    Ok(c)
}
