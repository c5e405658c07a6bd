//! The CUDA driver API, as exported C functions (the part cudarc calls, and a little more).
//!
//! Every function follows the contract of the CUDA driver function of the same name: pointers are
//! the caller's responsibility exactly as with the real driver. No function unwinds: an internal
//! panic becomes `CUDA_ERROR_UNKNOWN`. Unsupported features return `CUDA_ERROR_NOT_SUPPORTED`.
#![allow(non_snake_case, clippy::missing_safety_doc)]

pub mod errors;
mod state;

use crate::emulator::{attributes, LaunchDims};
use errors::*;
use state::*;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// CUdevice.
pub type CUdevice = c_int;
/// CUdeviceptr.
pub type CUdeviceptr = u64;
/// An opaque handle (CUcontext, CUstream, CUevent, CUmodule, CUfunction, CUgraph, CUgraphExec).
pub type Handle = *mut c_void;

/// `CUlaunchConfig`.
#[repr(C)]
pub struct CUlaunchConfig {
    /// Grid x.
    pub grid_dim_x: c_uint,
    /// Grid y.
    pub grid_dim_y: c_uint,
    /// Grid z.
    pub grid_dim_z: c_uint,
    /// Block x.
    pub block_dim_x: c_uint,
    /// Block y.
    pub block_dim_y: c_uint,
    /// Block z.
    pub block_dim_z: c_uint,
    /// Dynamic shared memory.
    pub shared_mem_bytes: c_uint,
    /// Stream.
    pub h_stream: Handle,
    /// Launch attributes (ignored).
    pub attrs: *mut c_void,
    /// Attribute count.
    pub num_attrs: c_uint,
}

macro_rules! ffi {
    ($body:block) => {
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> CuResult { $body })) {
            Ok(r) => r,
            Err(p) => {
                let msg = p
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| p.downcast_ref::<&str>().copied())
                    .unwrap_or("");
                eprintln!("ptx-emu: internal error: {msg}");
                UNKNOWN
            }
        }
    };
}

macro_rules! drv {
    () => {
        match driver() {
            Ok(d) => d,
            Err(e) => return e,
        }
    };
}

/// Store `v` through `p`.
unsafe fn put<T>(p: *mut T, v: T) -> CuResult {
    if p.is_null() {
        return INVALID_VALUE;
    }
    p.write(v);
    SUCCESS
}

fn h(p: Handle) -> usize {
    p as usize
}

/// SUCCESS when a handle was found (and, for destroys, removed), else CUDA_ERROR_INVALID_HANDLE.
fn found(yes: bool) -> CuResult {
    if yes {
        SUCCESS
    } else {
        INVALID_HANDLE
    }
}

// ---------------------------------------------------------------------------------------------
// Initialisation, devices, contexts
// ---------------------------------------------------------------------------------------------

/// cuInit.
#[no_mangle]
pub unsafe extern "C" fn cuInit(_flags: c_uint) -> CuResult {
    ffi!({
        drv!();
        SUCCESS
    })
}

/// cuDriverGetVersion: 13.0.
#[no_mangle]
pub unsafe extern "C" fn cuDriverGetVersion(v: *mut c_int) -> CuResult {
    ffi!({ put(v, 13000) })
}

/// cuDeviceGetCount: one emulated device.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetCount(count: *mut c_int) -> CuResult {
    ffi!({
        drv!();
        put(count, 1)
    })
}

/// cuDeviceGet.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGet(device: *mut CUdevice, ordinal: c_int) -> CuResult {
    ffi!({
        drv!();
        if ordinal != 0 {
            return INVALID_DEVICE;
        }
        put(device, 0)
    })
}

/// cuDeviceGetName.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetName(name: *mut c_char, len: c_int, dev: CUdevice) -> CuResult {
    ffi!({
        let d = drv!();
        if dev != 0 {
            return INVALID_DEVICE;
        }
        if name.is_null() || len <= 0 {
            return INVALID_VALUE;
        }
        let bytes = d.emu.spec().name.as_bytes();
        let n = bytes.len().min(len as usize - 1);
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), name as *mut u8, n);
        *name.add(n) = 0;
        SUCCESS
    })
}

/// cuDeviceGetAttribute.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetAttribute(
    pi: *mut c_int,
    attrib: c_uint,
    dev: CUdevice,
) -> CuResult {
    ffi!({
        let d = drv!();
        if dev != 0 {
            return INVALID_DEVICE;
        }
        match d.emu.spec().attribute(attrib) {
            Some(v) => put(pi, v.clamp(i32::MIN as i64, i32::MAX as i64) as c_int),
            None => INVALID_VALUE,
        }
    })
}

/// cuDeviceTotalMem_v2.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceTotalMem_v2(bytes: *mut usize, dev: CUdevice) -> CuResult {
    ffi!({
        let d = drv!();
        if dev != 0 {
            return INVALID_DEVICE;
        }
        put(bytes, d.emu.spec().total_memory as usize)
    })
}

/// cuDeviceGetUuid_v2.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid_v2(uuid: *mut [u8; 16], dev: CUdevice) -> CuResult {
    ffi!({
        drv!();
        if dev != 0 {
            return INVALID_DEVICE;
        }
        put(uuid, *b"ptx-emu-device-0")
    })
}

/// cuDeviceGetUuid.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetUuid(uuid: *mut [u8; 16], dev: CUdevice) -> CuResult {
    cuDeviceGetUuid_v2(uuid, dev)
}

/// cuDevicePrimaryCtxRetain.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRetain(pctx: *mut Handle, dev: CUdevice) -> CuResult {
    ffi!({
        drv!();
        if dev != 0 {
            return INVALID_DEVICE;
        }
        put(pctx, PRIMARY_CONTEXT as Handle)
    })
}

/// cuDevicePrimaryCtxRelease_v2.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxRelease_v2(dev: CUdevice) -> CuResult {
    ffi!({
        if dev != 0 {
            return INVALID_DEVICE;
        }
        SUCCESS
    })
}

/// cuDevicePrimaryCtxReset_v2: nothing to reset.
#[no_mangle]
pub unsafe extern "C" fn cuDevicePrimaryCtxReset_v2(dev: CUdevice) -> CuResult {
    cuDevicePrimaryCtxRelease_v2(dev)
}

fn context_valid(d: &Driver, ctx: usize) -> bool {
    ctx == PRIMARY_CONTEXT || d.handles().contexts.contains_key(&ctx)
}

/// cuCtxSetCurrent.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCurrent(ctx: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        let c = h(ctx);
        if c != 0 && !context_valid(d, c) {
            return INVALID_CONTEXT;
        }
        CURRENT.with(|cur| *cur.borrow_mut() = c);
        SUCCESS
    })
}

/// cuCtxGetCurrent.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCurrent(pctx: *mut Handle) -> CuResult {
    ffi!({ put(pctx, CURRENT.with(|c| *c.borrow()) as Handle) })
}

/// cuCtxPushCurrent_v2 (the emulator keeps one current context per thread).
#[no_mangle]
pub unsafe extern "C" fn cuCtxPushCurrent_v2(ctx: Handle) -> CuResult {
    cuCtxSetCurrent(ctx)
}

/// cuCtxPopCurrent_v2.
#[no_mangle]
pub unsafe extern "C" fn cuCtxPopCurrent_v2(pctx: *mut Handle) -> CuResult {
    ffi!({
        let c = CURRENT.with(|c| std::mem::take(&mut *c.borrow_mut()));
        if !pctx.is_null() {
            *pctx = c as Handle;
        }
        SUCCESS
    })
}

/// cuCtxGetDevice.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetDevice(device: *mut CUdevice) -> CuResult {
    ffi!({
        if CURRENT.with(|c| *c.borrow()) == 0 {
            return INVALID_CONTEXT;
        }
        put(device, 0)
    })
}

/// cuCtxCreate_v4: an additional context on the emulated device (sharing its memory).
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v4(
    pctx: *mut Handle,
    _params: *mut c_void,
    _flags: c_uint,
    dev: CUdevice,
) -> CuResult {
    ffi!({
        let d = drv!();
        if dev != 0 {
            return INVALID_DEVICE;
        }
        let c = {
            let mut hs = d.handles();
            let c = hs.fresh();
            hs.contexts.insert(c, ());
            c
        };
        CURRENT.with(|cur| *cur.borrow_mut() = c);
        put(pctx, c as Handle)
    })
}

/// cuCtxCreate_v3.
#[no_mangle]
pub unsafe extern "C" fn cuCtxCreate_v3(
    pctx: *mut Handle,
    _p: *mut c_void,
    _n: c_int,
    flags: c_uint,
    dev: CUdevice,
) -> CuResult {
    cuCtxCreate_v4(pctx, std::ptr::null_mut(), flags, dev)
}

/// cuCtxDestroy_v2.
#[no_mangle]
pub unsafe extern "C" fn cuCtxDestroy_v2(ctx: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        if d.handles().contexts.remove(&h(ctx)).is_none() {
            return INVALID_CONTEXT;
        }
        CURRENT.with(|c| {
            if *c.borrow() == h(ctx) {
                *c.borrow_mut() = 0;
            }
        });
        SUCCESS
    })
}

/// cuCtxSynchronize: all work is complete when it was enqueued.
#[no_mangle]
pub unsafe extern "C" fn cuCtxSynchronize() -> CuResult {
    ffi!({
        drv!();
        SUCCESS
    })
}

/// cuCtxSetLimit (accepted, no effect).
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetLimit(_limit: c_uint, _value: usize) -> CuResult {
    SUCCESS
}

/// cuCtxGetLimit: 1 KiB of stack, 1 MiB printf FIFO and heap, 2 levels of sync depth.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetLimit(pvalue: *mut usize, limit: c_uint) -> CuResult {
    ffi!({
        let v = match limit {
            0 => 1024,
            1 | 2 => 1 << 20,
            3 => 2,
            4 => 2048,
            5 => 0,
            6 => 0,
            _ => return INVALID_VALUE,
        };
        put(pvalue, v)
    })
}

/// cuCtxGetStreamPriorityRange: 0 (least) to -5 (greatest), as on Hopper.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetStreamPriorityRange(
    least: *mut c_int,
    greatest: *mut c_int,
) -> CuResult {
    ffi!({
        if !least.is_null() {
            *least = 0;
        }
        if !greatest.is_null() {
            *greatest = -5;
        }
        SUCCESS
    })
}

/// cuCtxSetCacheConfig (accepted, no effect).
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetCacheConfig(_config: c_uint) -> CuResult {
    SUCCESS
}

/// cuCtxGetCacheConfig: no preference.
#[no_mangle]
pub unsafe extern "C" fn cuCtxGetCacheConfig(pconfig: *mut c_uint) -> CuResult {
    ffi!({ put(pconfig, 0) })
}

/// cuCtxSetFlags (accepted, no effect).
#[no_mangle]
pub unsafe extern "C" fn cuCtxSetFlags(_flags: c_uint) -> CuResult {
    SUCCESS
}

/// cuProfilerStart (no effect).
#[no_mangle]
pub unsafe extern "C" fn cuProfilerStart() -> CuResult {
    SUCCESS
}

/// cuProfilerStop (no effect).
#[no_mangle]
pub unsafe extern "C" fn cuProfilerStop() -> CuResult {
    SUCCESS
}

/// cuGetErrorName.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorName(error: CuResult, pstr: *mut *const c_char) -> CuResult {
    ffi!({
        match describe(error) {
            Some((name, _)) => put(pstr, name.as_ptr() as *const c_char),
            None => {
                if !pstr.is_null() {
                    *pstr = std::ptr::null();
                }
                INVALID_VALUE
            }
        }
    })
}

/// cuGetErrorString: for a launch that a check failed on this thread, the finding is appended.
#[no_mangle]
pub unsafe extern "C" fn cuGetErrorString(error: CuResult, pstr: *mut *const c_char) -> CuResult {
    ffi!({
        if let Some((code, text)) = LAST_FINDING.with(|f| *f.borrow()) {
            if code == error {
                return put(pstr, text.as_ptr());
            }
        }
        match describe(error) {
            Some((_, text)) => put(pstr, text.as_ptr() as *const c_char),
            None => {
                if !pstr.is_null() {
                    *pstr = std::ptr::null();
                }
                INVALID_VALUE
            }
        }
    })
}

// ---------------------------------------------------------------------------------------------
// Memory
// ---------------------------------------------------------------------------------------------

/// cuMemAlloc_v2 (zero bytes is an error, as with the driver).
#[no_mangle]
pub unsafe extern "C" fn cuMemAlloc_v2(dptr: *mut CUdeviceptr, bytesize: usize) -> CuResult {
    ffi!({
        let d = drv!();
        if bytesize == 0 || dptr.is_null() {
            return INVALID_VALUE;
        }
        alloc_result(d, dptr, bytesize)
    })
}

/// cuMemAllocAsync (zero bytes gives a null pointer).
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocAsync(
    dptr: *mut CUdeviceptr,
    bytesize: usize,
    stream: Handle,
) -> CuResult {
    ffi!({
        let d = drv!();
        if !d.stream_exists(h(stream)) {
            return INVALID_HANDLE;
        }
        if bytesize == 0 {
            return put(dptr, 0);
        }
        alloc_result(d, dptr, bytesize)
    })
}

/// Allocate for cuMemAlloc*: the address, or CUDA_ERROR_OUT_OF_MEMORY when the reported device
/// memory or the host's memory is exhausted.
unsafe fn alloc_result(d: &Driver, dptr: *mut CUdeviceptr, bytesize: usize) -> CuResult {
    let total = d.emu.spec().total_memory;
    if d.emu.memory().used().saturating_add(bytesize as u64) > total {
        return OUT_OF_MEMORY;
    }
    match d.emu.memory().try_alloc(bytesize as u64) {
        Some(a) => put(dptr, a),
        None => OUT_OF_MEMORY,
    }
}

/// cuMemFree_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemFree_v2(dptr: CUdeviceptr) -> CuResult {
    ffi!({
        let d = drv!();
        if dptr == 0 || d.emu.memory().free(dptr) {
            SUCCESS
        } else {
            INVALID_VALUE
        }
    })
}

/// cuMemFreeAsync.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeAsync(dptr: CUdeviceptr, _stream: Handle) -> CuResult {
    cuMemFree_v2(dptr)
}

/// cuMemGetInfo_v2: the reported total minus what is allocated, and no more than the host's
/// available memory (host memory holds the allocations).
#[no_mangle]
pub unsafe extern "C" fn cuMemGetInfo_v2(free: *mut usize, total: *mut usize) -> CuResult {
    ffi!({
        let d = drv!();
        let t = d.emu.spec().total_memory;
        let used = d.emu.memory().used();
        if !free.is_null() {
            *free = t.saturating_sub(used).min(host_available()) as usize;
        }
        if !total.is_null() {
            *total = t as usize;
        }
        SUCCESS
    })
}

/// The host's available memory (`MemAvailable` of /proc/meminfo), or unbounded when unknown.
fn host_available() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemAvailable:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map(|kib| kib * 1024)
        .unwrap_or(u64::MAX)
}

/// cuMemHostAlloc: ordinary (pageable) host memory.
#[no_mangle]
pub unsafe extern "C" fn cuMemHostAlloc(
    pp: *mut *mut c_void,
    bytesize: usize,
    _flags: c_uint,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Ok(layout) = std::alloc::Layout::from_size_align(bytesize.max(1), 256) else {
            return INVALID_VALUE;
        };
        let p = std::alloc::alloc(layout);
        if p.is_null() {
            return OUT_OF_MEMORY;
        }
        d.handles().host_allocs.insert(p as usize, layout);
        put(pp, p as *mut c_void)
    })
}

/// cuMemAllocHost_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocHost_v2(pp: *mut *mut c_void, bytesize: usize) -> CuResult {
    cuMemHostAlloc(pp, bytesize, 0)
}

/// cuMemFreeHost.
#[no_mangle]
pub unsafe extern "C" fn cuMemFreeHost(p: *mut c_void) -> CuResult {
    ffi!({
        let d = drv!();
        match d.handles().host_allocs.remove(&(p as usize)) {
            Some(layout) => {
                std::alloc::dealloc(p as *mut u8, layout);
                SUCCESS
            }
            None => INVALID_VALUE,
        }
    })
}

/// cuMemcpyHtoD_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoD_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
) -> CuResult {
    cuMemcpyHtoDAsync_v2(dst, src, n, std::ptr::null_mut())
}

/// cuMemcpyHtoDAsync_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyHtoDAsync_v2(
    dst: CUdeviceptr,
    src: *const c_void,
    n: usize,
    stream: Handle,
) -> CuResult {
    ffi!({
        let d = drv!();
        if n == 0 {
            return SUCCESS;
        }
        if src.is_null() {
            return INVALID_VALUE;
        }
        d.enqueue(
            h(stream),
            Node::HtoD {
                dst,
                src: src as usize,
                len: n,
            },
        )
    })
}

/// cuMemcpyDtoH_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoH_v2(dst: *mut c_void, src: CUdeviceptr, n: usize) -> CuResult {
    cuMemcpyDtoHAsync_v2(dst, src, n, std::ptr::null_mut())
}

/// cuMemcpyDtoHAsync_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoHAsync_v2(
    dst: *mut c_void,
    src: CUdeviceptr,
    n: usize,
    stream: Handle,
) -> CuResult {
    ffi!({
        let d = drv!();
        if n == 0 {
            return SUCCESS;
        }
        if dst.is_null() {
            return INVALID_VALUE;
        }
        d.enqueue(
            h(stream),
            Node::DtoH {
                dst: dst as usize,
                src,
                len: n,
            },
        )
    })
}

/// cuMemcpyDtoD_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoD_v2(dst: CUdeviceptr, src: CUdeviceptr, n: usize) -> CuResult {
    cuMemcpyDtoDAsync_v2(dst, src, n, std::ptr::null_mut())
}

/// cuMemcpyDtoDAsync_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyDtoDAsync_v2(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    stream: Handle,
) -> CuResult {
    ffi!({
        let d = drv!();
        if n == 0 {
            return SUCCESS;
        }
        d.enqueue(
            h(stream),
            Node::DtoD {
                dst,
                src,
                len: n as u64,
            },
        )
    })
}

/// cuMemcpyAsync (unified addressing: device pointers only in the emulator).
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyAsync(
    dst: CUdeviceptr,
    src: CUdeviceptr,
    n: usize,
    stream: Handle,
) -> CuResult {
    cuMemcpyDtoDAsync_v2(dst, src, n, stream)
}

unsafe fn memset(
    dst: CUdeviceptr,
    value: u64,
    elem: usize,
    count: usize,
    stream: Handle,
) -> CuResult {
    ffi!({
        let d = drv!();
        if count == 0 {
            return SUCCESS;
        }
        d.enqueue(
            h(stream),
            Node::Memset {
                dst,
                value,
                elem,
                count: count as u64,
            },
        )
    })
}

/// cuMemsetD8_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8_v2(dst: CUdeviceptr, v: u8, n: usize) -> CuResult {
    memset(dst, v as u64, 1, n, std::ptr::null_mut())
}

/// cuMemsetD8Async.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD8Async(
    dst: CUdeviceptr,
    v: u8,
    n: usize,
    stream: Handle,
) -> CuResult {
    memset(dst, v as u64, 1, n, stream)
}

/// cuMemsetD16_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16_v2(dst: CUdeviceptr, v: u16, n: usize) -> CuResult {
    memset(dst, v as u64, 2, n, std::ptr::null_mut())
}

/// cuMemsetD16Async.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD16Async(
    dst: CUdeviceptr,
    v: u16,
    n: usize,
    stream: Handle,
) -> CuResult {
    memset(dst, v as u64, 2, n, stream)
}

/// cuMemsetD32_v2.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32_v2(dst: CUdeviceptr, v: u32, n: usize) -> CuResult {
    memset(dst, v as u64, 4, n, std::ptr::null_mut())
}

/// cuMemsetD32Async.
#[no_mangle]
pub unsafe extern "C" fn cuMemsetD32Async(
    dst: CUdeviceptr,
    v: u32,
    n: usize,
    stream: Handle,
) -> CuResult {
    memset(dst, v as u64, 4, n, stream)
}

/// cuMemAllocManaged: managed memory is not emulated.
#[no_mangle]
pub unsafe extern "C" fn cuMemAllocManaged(
    _p: *mut CUdeviceptr,
    _n: usize,
    _f: c_uint,
) -> CuResult {
    NOT_SUPPORTED
}

/// `CUmemLocation`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CUmemLocation {
    /// Location type.
    pub kind: c_uint,
    /// Location id.
    pub id: c_int,
}

/// cuMemPrefetchAsync_v2: not emulated.
#[no_mangle]
pub unsafe extern "C" fn cuMemPrefetchAsync_v2(
    _p: CUdeviceptr,
    _n: usize,
    _l: CUmemLocation,
    _f: c_uint,
    _s: Handle,
) -> CuResult {
    NOT_SUPPORTED
}

/// cuMemAdvise_v2: not emulated.
#[no_mangle]
pub unsafe extern "C" fn cuMemAdvise_v2(
    _p: CUdeviceptr,
    _n: usize,
    _a: c_uint,
    _l: CUmemLocation,
) -> CuResult {
    NOT_SUPPORTED
}

/// cuStreamAttachMemAsync (accepted, no effect).
#[no_mangle]
pub unsafe extern "C" fn cuStreamAttachMemAsync(
    _s: Handle,
    _p: CUdeviceptr,
    _n: usize,
    _f: c_uint,
) -> CuResult {
    SUCCESS
}

/// cuDeviceGetDefaultMemPool: one pool handle.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetDefaultMemPool(pool: *mut Handle, dev: CUdevice) -> CuResult {
    ffi!({
        if dev != 0 {
            return INVALID_DEVICE;
        }
        put(pool, 0x9001 as Handle)
    })
}

/// cuDeviceGetMemPool.
#[no_mangle]
pub unsafe extern "C" fn cuDeviceGetMemPool(pool: *mut Handle, dev: CUdevice) -> CuResult {
    cuDeviceGetDefaultMemPool(pool, dev)
}

/// cuMemPoolSetAttribute (accepted, no effect).
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolSetAttribute(
    _pool: Handle,
    _attr: c_uint,
    _value: *mut c_void,
) -> CuResult {
    SUCCESS
}

/// cuMemPoolGetAttribute: zero.
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolGetAttribute(
    _pool: Handle,
    _attr: c_uint,
    value: *mut u64,
) -> CuResult {
    ffi!({ put(value, 0) })
}

/// cuMemPoolTrimTo (no effect).
#[no_mangle]
pub unsafe extern "C" fn cuMemPoolTrimTo(_pool: Handle, _keep: usize) -> CuResult {
    SUCCESS
}

// ---------------------------------------------------------------------------------------------
// Modules and functions
// ---------------------------------------------------------------------------------------------

/// cuModuleLoadData: a fatbin (its PTX for the emulated device is interpreted) or PTX text.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadData(module: *mut Handle, image: *const c_void) -> CuResult {
    ffi!({
        let d = drv!();
        if image.is_null() || module.is_null() {
            return INVALID_VALUE;
        }
        let ptr = crate::fatbin::unwrap_fatbin_wrapper(image as *const u8);
        let Some(len) = crate::fatbin::image_len(ptr) else {
            eprintln!("ptx-emu: cuModuleLoadData: the image is neither a fatbin nor PTX text");
            return crate::emulator::errors::INVALID_IMAGE;
        };
        let bytes = std::slice::from_raw_parts(ptr, len);
        match d.emu.load_module(bytes) {
            Ok(m) => {
                let mut hs = d.handles();
                let hd = hs.fresh();
                hs.modules.insert(hd, m);
                put(module, hd as Handle)
            }
            Err(e) => report(&e),
        }
    })
}

/// cuModuleLoadDataEx (JIT options ignored).
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoadDataEx(
    module: *mut Handle,
    image: *const c_void,
    _n: c_uint,
    _o: *mut c_void,
    _v: *mut *mut c_void,
) -> CuResult {
    cuModuleLoadData(module, image)
}

/// cuModuleLoad: a fatbin or PTX file.
#[no_mangle]
pub unsafe extern "C" fn cuModuleLoad(module: *mut Handle, fname: *const c_char) -> CuResult {
    ffi!({
        if fname.is_null() {
            return INVALID_VALUE;
        }
        let Ok(path) = CStr::from_ptr(fname).to_str() else {
            return INVALID_VALUE;
        };
        match std::fs::read(path) {
            Ok(mut bytes) => {
                bytes.push(0);
                cuModuleLoadData(module, bytes.as_ptr() as *const c_void)
            }
            Err(_) => 301, // CUDA_ERROR_FILE_NOT_FOUND
        }
    })
}

/// cuModuleUnload.
#[no_mangle]
pub unsafe extern "C" fn cuModuleUnload(module: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        let m = d.handles().modules.remove(&h(module));
        match m {
            Some(m) => {
                d.emu.unload_module(&m);
                SUCCESS
            }
            None => INVALID_HANDLE,
        }
    })
}

/// cuModuleGetFunction.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetFunction(
    hfunc: *mut Handle,
    module: Handle,
    name: *const c_char,
) -> CuResult {
    ffi!({
        let d = drv!();
        if name.is_null() {
            return INVALID_VALUE;
        }
        let Ok(name) = CStr::from_ptr(name).to_str() else {
            return INVALID_VALUE;
        };
        let key = (h(module), name.to_string());
        let m = {
            let hs = d.handles();
            if let Some(&f) = hs.function_names.get(&key) {
                return put(hfunc, f as Handle);
            }
            match hs.modules.get(&h(module)) {
                Some(m) => m.clone(),
                None => return INVALID_HANDLE,
            }
        };
        match d.emu.function(&m, name) {
            Ok(f) => {
                let mut hs = d.handles();
                let hd = hs.fresh();
                hs.functions.insert(hd, f);
                hs.function_names.insert(key, hd);
                put(hfunc, hd as Handle)
            }
            Err(e) => report(&e),
        }
    })
}

/// cuModuleGetGlobal_v2.
#[no_mangle]
pub unsafe extern "C" fn cuModuleGetGlobal_v2(
    dptr: *mut CUdeviceptr,
    bytes: *mut usize,
    module: Handle,
    name: *const c_char,
) -> CuResult {
    ffi!({
        let d = drv!();
        if name.is_null() {
            return INVALID_VALUE;
        }
        let Ok(name) = CStr::from_ptr(name).to_str() else {
            return INVALID_VALUE;
        };
        let Some(m) = d.handles().modules.get(&h(module)).cloned() else {
            return INVALID_HANDLE;
        };
        match m.global(name) {
            Some((a, n)) => {
                if !dptr.is_null() {
                    *dptr = a;
                }
                if !bytes.is_null() {
                    *bytes = n as usize;
                }
                SUCCESS
            }
            None => NOT_FOUND,
        }
    })
}

fn function(d: &Driver, f: Handle) -> Option<std::sync::Arc<crate::emulator::Function>> {
    d.handles().functions.get(&h(f)).cloned()
}

/// cuFuncGetAttribute.
#[no_mangle]
pub unsafe extern "C" fn cuFuncGetAttribute(
    pi: *mut c_int,
    attrib: c_uint,
    hfunc: Handle,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(f) = function(d, hfunc) else {
            return INVALID_HANDLE;
        };
        match d.emu.function_attribute(&f, attrib) {
            Ok(v) => put(pi, v as c_int),
            Err(e) => report(&e),
        }
    })
}

/// cuFuncSetAttribute.
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetAttribute(
    hfunc: Handle,
    attrib: c_uint,
    value: c_int,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(f) = function(d, hfunc) else {
            return INVALID_HANDLE;
        };
        match d.emu.set_function_attribute(&f, attrib, value as i64) {
            Ok(()) => SUCCESS,
            Err(e) => report(&e),
        }
    })
}

/// cuFuncSetCacheConfig (accepted, no effect).
#[no_mangle]
pub unsafe extern "C" fn cuFuncSetCacheConfig(hfunc: Handle, _config: c_uint) -> CuResult {
    ffi!({
        let d = drv!();
        found(function(d, hfunc).is_some())
    })
}

/// cuOccupancyMaxActiveBlocksPerMultiprocessor (the emulator's documented estimate).
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessor(
    n: *mut c_int,
    hfunc: Handle,
    block: c_int,
    smem: usize,
) -> CuResult {
    cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(n, hfunc, block, smem, 0)
}

/// cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxActiveBlocksPerMultiprocessorWithFlags(
    n: *mut c_int,
    hfunc: Handle,
    block: c_int,
    smem: usize,
    _flags: c_uint,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(f) = function(d, hfunc) else {
            return INVALID_HANDLE;
        };
        if block <= 0 {
            return INVALID_VALUE;
        }
        put(n, d.emu.occupancy(&f, block as u32, smem as u32) as c_int)
    })
}

/// cuOccupancyMaxPotentialBlockSize: the block size (a multiple of 32) with the most resident
/// threads, and the grid that fills the device with it.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSize(
    min_grid: *mut c_int,
    block_size: *mut c_int,
    hfunc: Handle,
    smem_of_block: Option<unsafe extern "C" fn(c_int) -> usize>,
    smem: usize,
    limit: c_int,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(f) = function(d, hfunc) else {
            return INVALID_HANDLE;
        };
        let max = d
            .emu
            .function_attribute(&f, attributes::MAX_THREADS_PER_BLOCK)
            .unwrap_or(1024) as i32;
        let max = if limit > 0 { max.min(limit) } else { max };
        let mut best = (0u32, 32i32);
        let mut b = 32;
        while b <= max {
            let s = match smem_of_block {
                Some(func) => func(b),
                None => smem,
            };
            let occ = d.emu.occupancy(&f, b as u32, s as u32);
            if occ * b as u32 > best.0 * best.1 as u32 {
                best = (occ, b);
            }
            b += 32;
        }
        if !min_grid.is_null() {
            *min_grid = (best.0 * d.emu.spec().sm_count) as c_int;
        }
        put(block_size, best.1)
    })
}

/// cuOccupancyMaxPotentialBlockSizeWithFlags.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyMaxPotentialBlockSizeWithFlags(
    min_grid: *mut c_int,
    block_size: *mut c_int,
    hfunc: Handle,
    smem_of_block: Option<unsafe extern "C" fn(c_int) -> usize>,
    smem: usize,
    limit: c_int,
    _flags: c_uint,
) -> CuResult {
    cuOccupancyMaxPotentialBlockSize(min_grid, block_size, hfunc, smem_of_block, smem, limit)
}

/// cuOccupancyAvailableDynamicSMemPerBlock.
#[no_mangle]
pub unsafe extern "C" fn cuOccupancyAvailableDynamicSMemPerBlock(
    out: *mut usize,
    hfunc: Handle,
    blocks: c_int,
    block: c_int,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(f) = function(d, hfunc) else {
            return INVALID_HANDLE;
        };
        if blocks <= 0 || block <= 0 {
            return INVALID_VALUE;
        }
        let s = d.emu.spec();
        let per_block = s.smem_per_sm / blocks as u32;
        let avail = per_block
            .saturating_sub(s.smem_reserved_per_block)
            .saturating_sub(f.kernel.static_smem)
            .min(s.smem_per_block_optin.saturating_sub(f.kernel.static_smem));
        put(out, avail as usize)
    })
}

// ---------------------------------------------------------------------------------------------
// Launches
// ---------------------------------------------------------------------------------------------

unsafe fn launch(
    hfunc: Handle,
    grid: [c_uint; 3],
    block: [c_uint; 3],
    smem: c_uint,
    stream: Handle,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(f) = function(d, hfunc) else {
            return INVALID_HANDLE;
        };
        let buf = if !params.is_null() {
            let n = d.emu.param_count(&f);
            let args: Vec<*const u8> = (0..n).map(|i| *params.add(i) as *const u8).collect();
            match d.emu.pack_params(&f, &args) {
                Ok(b) => b,
                Err(e) => return report(&e),
            }
        } else if !extra.is_null() {
            // CU_LAUNCH_PARAM_BUFFER_POINTER (1), CU_LAUNCH_PARAM_BUFFER_SIZE (2), END (0).
            let mut ptr: *const u8 = std::ptr::null();
            let mut size = 0usize;
            let mut i = 0;
            loop {
                let key = *extra.add(i) as usize;
                match key {
                    0 => break,
                    1 => ptr = *extra.add(i + 1) as *const u8,
                    2 => size = *(*extra.add(i + 1) as *const usize),
                    _ => return INVALID_VALUE,
                }
                i += 2;
            }
            if ptr.is_null() {
                return INVALID_VALUE;
            }
            std::slice::from_raw_parts(ptr, size).to_vec()
        } else if f.kernel.param_bytes == 0 {
            Vec::new()
        } else {
            return INVALID_VALUE;
        };
        let dims = LaunchDims {
            grid,
            block,
            dynamic_smem: smem,
        };
        d.enqueue(
            h(stream),
            Node::Kernel {
                func: f,
                dims,
                params: buf,
            },
        )
    })
}

/// cuLaunchKernel: runs the kernel to completion before returning; a check's finding fails the
/// launch with its CUDA error (the finding is printed and appended to cuGetErrorString's text).
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernel(
    f: Handle,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    smem: c_uint,
    stream: Handle,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    launch(f, [gx, gy, gz], [bx, by, bz], smem, stream, params, extra)
}

/// cuLaunchCooperativeKernel: every block runs, so a cooperative launch is an ordinary one.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchCooperativeKernel(
    f: Handle,
    gx: c_uint,
    gy: c_uint,
    gz: c_uint,
    bx: c_uint,
    by: c_uint,
    bz: c_uint,
    smem: c_uint,
    stream: Handle,
    params: *mut *mut c_void,
) -> CuResult {
    launch(
        f,
        [gx, gy, gz],
        [bx, by, bz],
        smem,
        stream,
        params,
        std::ptr::null_mut(),
    )
}

/// cuLaunchKernelEx (launch attributes are ignored).
#[no_mangle]
pub unsafe extern "C" fn cuLaunchKernelEx(
    config: *const CUlaunchConfig,
    f: Handle,
    params: *mut *mut c_void,
    extra: *mut *mut c_void,
) -> CuResult {
    if config.is_null() {
        return INVALID_VALUE;
    }
    let c = &*config;
    launch(
        f,
        [c.grid_dim_x, c.grid_dim_y, c.grid_dim_z],
        [c.block_dim_x, c.block_dim_y, c.block_dim_z],
        c.shared_mem_bytes,
        c.h_stream,
        params,
        extra,
    )
}

/// cuLaunchHostFunc.
#[no_mangle]
pub unsafe extern "C" fn cuLaunchHostFunc(
    stream: Handle,
    f: Option<HostFn>,
    data: *mut c_void,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(f) = f else {
            return INVALID_VALUE;
        };
        d.enqueue(
            h(stream),
            Node::Host {
                f,
                data: data as usize,
            },
        )
    })
}

// ---------------------------------------------------------------------------------------------
// Streams and events
// ---------------------------------------------------------------------------------------------

/// cuStreamCreate.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreate(ph: *mut Handle, _flags: c_uint) -> CuResult {
    ffi!({
        let d = drv!();
        let mut hs = d.handles();
        let s = hs.fresh();
        hs.streams.insert(s, Stream::default());
        put(ph, s as Handle)
    })
}

/// cuStreamCreateWithPriority.
#[no_mangle]
pub unsafe extern "C" fn cuStreamCreateWithPriority(
    ph: *mut Handle,
    flags: c_uint,
    _priority: c_int,
) -> CuResult {
    cuStreamCreate(ph, flags)
}

/// cuStreamDestroy_v2.
#[no_mangle]
pub unsafe extern "C" fn cuStreamDestroy_v2(s: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        found(d.handles().streams.remove(&h(s)).is_some())
    })
}

fn capturing(d: &Driver, s: usize) -> bool {
    d.handles()
        .streams
        .get(&s)
        .is_some_and(|st| st.capture.is_some())
}

/// cuStreamSynchronize: nothing is pending; a capturing stream cannot be synchronised.
#[no_mangle]
pub unsafe extern "C" fn cuStreamSynchronize(s: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        if !d.stream_exists(h(s)) {
            return INVALID_HANDLE;
        }
        if capturing(d, h(s)) {
            if let Some(Stream {
                capture: Some(c), ..
            }) = d.handles().streams.get_mut(&h(s))
            {
                c.invalidated = true;
            }
            return STREAM_CAPTURE_UNSUPPORTED;
        }
        SUCCESS
    })
}

/// cuStreamQuery: always complete.
#[no_mangle]
pub unsafe extern "C" fn cuStreamQuery(s: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        found(d.stream_exists(h(s)))
    })
}

/// cuStreamWaitEvent: work is complete when enqueued, so there is nothing to wait for.
#[no_mangle]
pub unsafe extern "C" fn cuStreamWaitEvent(s: Handle, e: Handle, _flags: c_uint) -> CuResult {
    ffi!({
        let d = drv!();
        if !d.stream_exists(h(s)) || !d.handles().events.contains_key(&h(e)) {
            return INVALID_HANDLE;
        }
        SUCCESS
    })
}

/// cuStreamBeginCapture_v2.
#[no_mangle]
pub unsafe extern "C" fn cuStreamBeginCapture_v2(s: Handle, _mode: c_uint) -> CuResult {
    ffi!({
        let d = drv!();
        let mut hs = d.handles();
        match hs.streams.get_mut(&h(s)) {
            None if h(s) <= STREAM_PER_THREAD => STREAM_CAPTURE_UNSUPPORTED,
            None => INVALID_HANDLE,
            Some(st) if st.capture.is_some() => ILLEGAL_STATE,
            Some(st) => {
                st.capture = Some(Capture::default());
                SUCCESS
            }
        }
    })
}

/// cuStreamBeginCapture (the older entry point).
#[no_mangle]
pub unsafe extern "C" fn cuStreamBeginCapture(s: Handle, mode: c_uint) -> CuResult {
    cuStreamBeginCapture_v2(s, mode)
}

/// cuStreamEndCapture.
#[no_mangle]
pub unsafe extern "C" fn cuStreamEndCapture(s: Handle, graph: *mut Handle) -> CuResult {
    ffi!({
        let d = drv!();
        let mut hs = d.handles();
        let capture = match hs.streams.get_mut(&h(s)) {
            None => return INVALID_HANDLE,
            Some(st) => st.capture.take(),
        };
        let Some(c) = capture else {
            return ILLEGAL_STATE;
        };
        if c.invalidated {
            if !graph.is_null() {
                *graph = std::ptr::null_mut();
            }
            return STREAM_CAPTURE_INVALIDATED;
        }
        let g = hs.fresh();
        hs.graphs.insert(g, c.nodes);
        put(graph, g as Handle)
    })
}

/// cuStreamIsCapturing: 0 none, 1 active, 2 invalidated.
#[no_mangle]
pub unsafe extern "C" fn cuStreamIsCapturing(s: Handle, status: *mut c_uint) -> CuResult {
    ffi!({
        let d = drv!();
        let hs = d.handles();
        let v = match hs.streams.get(&h(s)) {
            Some(Stream {
                capture: Some(c), ..
            }) => {
                if c.invalidated {
                    2
                } else {
                    1
                }
            }
            Some(_) => 0,
            None if h(s) <= STREAM_PER_THREAD => 0,
            None => return INVALID_HANDLE,
        };
        put(status, v)
    })
}

/// cuEventCreate (flag 2, CU_EVENT_DISABLE_TIMING, is honoured).
#[no_mangle]
pub unsafe extern "C" fn cuEventCreate(ph: *mut Handle, flags: c_uint) -> CuResult {
    ffi!({
        let d = drv!();
        let mut hs = d.handles();
        let e = hs.fresh();
        hs.events.insert(
            e,
            Event {
                time: None,
                timing: flags & 2 == 0,
            },
        );
        put(ph, e as Handle)
    })
}

/// cuEventRecord: the event takes the emulator time (host time spent on device work so far).
#[no_mangle]
pub unsafe extern "C" fn cuEventRecord(e: Handle, s: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        if !d.handles().events.contains_key(&h(e)) {
            return INVALID_HANDLE;
        }
        d.enqueue(h(s), Node::EventRecord { event: h(e) })
    })
}

/// cuEventRecordWithFlags.
#[no_mangle]
pub unsafe extern "C" fn cuEventRecordWithFlags(e: Handle, s: Handle, _flags: c_uint) -> CuResult {
    cuEventRecord(e, s)
}

/// cuEventQuery: always complete.
#[no_mangle]
pub unsafe extern "C" fn cuEventQuery(e: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        found(d.handles().events.contains_key(&h(e)))
    })
}

/// cuEventSynchronize.
#[no_mangle]
pub unsafe extern "C" fn cuEventSynchronize(e: Handle) -> CuResult {
    cuEventQuery(e)
}

/// cuEventElapsedTime: emulator milliseconds between two records.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime(ms: *mut f32, start: Handle, end: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        let hs = d.handles();
        let (Some(a), Some(b)) = (hs.events.get(&h(start)), hs.events.get(&h(end))) else {
            return INVALID_HANDLE;
        };
        if !a.timing || !b.timing {
            return INVALID_HANDLE;
        }
        match (a.time, b.time) {
            (Some(x), Some(y)) => put(ms, (y - x) as f32),
            _ => INVALID_HANDLE,
        }
    })
}

/// cuEventElapsedTime_v2.
#[no_mangle]
pub unsafe extern "C" fn cuEventElapsedTime_v2(
    ms: *mut f32,
    start: Handle,
    end: Handle,
) -> CuResult {
    cuEventElapsedTime(ms, start, end)
}

/// cuEventDestroy_v2.
#[no_mangle]
pub unsafe extern "C" fn cuEventDestroy_v2(e: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        found(d.handles().events.remove(&h(e)).is_some())
    })
}

// ---------------------------------------------------------------------------------------------
// Graphs
// ---------------------------------------------------------------------------------------------

/// cuGraphInstantiateWithFlags.
#[no_mangle]
pub unsafe extern "C" fn cuGraphInstantiateWithFlags(
    exec: *mut Handle,
    graph: Handle,
    _flags: u64,
) -> CuResult {
    ffi!({
        let d = drv!();
        let mut hs = d.handles();
        let Some(nodes) = hs.graphs.get(&h(graph)).cloned() else {
            return INVALID_HANDLE;
        };
        let e = hs.fresh();
        hs.execs.insert(e, nodes);
        put(exec, e as Handle)
    })
}

/// cuGraphLaunch: replays the captured operations in order on `stream`.
#[no_mangle]
pub unsafe extern "C" fn cuGraphLaunch(exec: Handle, stream: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(nodes) = d.handles().execs.get(&h(exec)).cloned() else {
            return INVALID_HANDLE;
        };
        for n in nodes {
            let r = d.enqueue(h(stream), n);
            if r != SUCCESS {
                return r;
            }
        }
        SUCCESS
    })
}

/// cuGraphUpload (nothing to upload).
#[no_mangle]
pub unsafe extern "C" fn cuGraphUpload(exec: Handle, _stream: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        found(d.handles().execs.contains_key(&h(exec)))
    })
}

/// cuGraphDestroy.
#[no_mangle]
pub unsafe extern "C" fn cuGraphDestroy(graph: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        found(d.handles().graphs.remove(&h(graph)).is_some())
    })
}

/// cuGraphExecDestroy.
#[no_mangle]
pub unsafe extern "C" fn cuGraphExecDestroy(exec: Handle) -> CuResult {
    ffi!({
        let d = drv!();
        found(d.handles().execs.remove(&h(exec)).is_some())
    })
}

/// cuGraphGetNodes: the number of captured operations (node handles are not exposed).
#[no_mangle]
pub unsafe extern "C" fn cuGraphGetNodes(
    graph: Handle,
    nodes: *mut Handle,
    count: *mut usize,
) -> CuResult {
    ffi!({
        let d = drv!();
        let Some(n) = d.handles().graphs.get(&h(graph)).map(Vec::len) else {
            return INVALID_HANDLE;
        };
        if !nodes.is_null() {
            return NOT_SUPPORTED;
        }
        put(count, n)
    })
}

/// Handles of unsupported families (external memory, peer copies) answer "not supported".
#[no_mangle]
pub unsafe extern "C" fn cuImportExternalMemory(
    _out: *mut Handle,
    _desc: *const c_void,
) -> CuResult {
    NOT_SUPPORTED
}

/// cuMemcpyPeerAsync: one device only.
#[no_mangle]
pub unsafe extern "C" fn cuMemcpyPeerAsync(
    _d: CUdeviceptr,
    _dc: Handle,
    _s: CUdeviceptr,
    _sc: Handle,
    _n: usize,
    _st: Handle,
) -> CuResult {
    NOT_SUPPORTED
}
