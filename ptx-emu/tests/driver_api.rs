//! The exported CUDA driver functions, called as a C program would: device attributes, memory and
//! copies, module loading from PTX text, function attributes and the 48 KiB dynamic shared memory
//! limit, launch limits and parameter packing, a finding as a launch error, streams, events, and
//! stream capture with graph replay.

use ptx_emu::attributes;
use ptx_emu::driver::errors::*;
use ptx_emu::driver::*;
use std::ffi::{c_void, CStr, CString};
use std::ptr::{null, null_mut};

/// A kernel that adds `v` to each of `n` floats, one thread per element, and one that needs 64 KiB
/// of dynamic shared memory (it writes and reads it back).
const PTX: &str = r#"
.version 8.0
.target sm_80
.address_size 64
.extern .shared .align 16 .b8 dyn[];
.visible .entry add(.param .u64 p, .param .u32 n, .param .f32 v)
{
    .reg .b32 %r<6>; .reg .b64 %rd<4>; .reg .f32 %f<3>; .reg .pred %p<2>;
    ld.param.u64 %rd1, [p]; ld.param.u32 %r1, [n]; ld.param.f32 %f1, [v];
    mov.u32 %r2, %ctaid.x; mov.u32 %r3, %ntid.x; mov.u32 %r4, %tid.x;
    mad.lo.s32 %r5, %r2, %r3, %r4;
    setp.ge.u32 %p1, %r5, %r1;
    @%p1 bra $done;
    cvta.to.global.u64 %rd1, %rd1;
    mul.wide.u32 %rd2, %r5, 4; add.s64 %rd3, %rd1, %rd2;
    ld.global.f32 %f2, [%rd3]; add.f32 %f2, %f2, %f1; st.global.f32 [%rd3], %f2;
$done:
    ret;
}
.visible .entry big(.param .u64 p)
{
    .reg .b32 %r<4>; .reg .b64 %rd<3>;
    ld.param.u64 %rd1, [p]; cvta.to.global.u64 %rd1, %rd1;
    mov.u32 %r1, %tid.x; shl.b32 %r2, %r1, 2; mov.u32 %r3, dyn; add.u32 %r3, %r3, %r2;
    st.shared.u32 [%r3+60000], %r1; bar.sync 0; ld.shared.u32 %r1, [%r3+60000];
    mul.wide.u32 %rd2, %r2, 1; add.s64 %rd2, %rd1, %rd2; st.global.u32 [%rd2], %r1;
    ret;
}
"#;

fn ok(r: CuResult, what: &str) {
    if r != SUCCESS {
        let mut name = null();
        // SAFETY: cuGetErrorName writes a pointer to a static string.
        unsafe { cuGetErrorName(r, &mut name) };
        let name = if name.is_null() {
            "?".into()
        } else {
            // SAFETY: a NUL-terminated static string.
            unsafe { CStr::from_ptr(name) }.to_string_lossy()
        };
        panic!("{what}: {name} ({r})");
    }
}

struct Ctx {
    module: Handle,
    add: Handle,
    big: Handle,
}

fn setup() -> Ctx {
    // SAFETY: every call follows the CUDA driver API's contract.
    unsafe {
        ok(cuInit(0), "cuInit");
        let mut ctx = null_mut();
        ok(cuDevicePrimaryCtxRetain(&mut ctx, 0), "retain");
        ok(cuCtxSetCurrent(ctx), "set current");
        let text = CString::new(PTX).unwrap();
        let mut module = null_mut();
        ok(
            cuModuleLoadData(&mut module, text.as_ptr() as *const c_void),
            "load PTX",
        );
        let mut add = null_mut();
        let mut big = null_mut();
        ok(
            cuModuleGetFunction(&mut add, module, c"add".as_ptr()),
            "add",
        );
        ok(
            cuModuleGetFunction(&mut big, module, c"big".as_ptr()),
            "big",
        );
        Ctx { module, add, big }
    }
}

#[test]
fn device_attributes_describe_an_emulated_h200() {
    setup();
    // SAFETY: valid out-pointers.
    unsafe {
        let mut v = 0;
        ok(cuDeviceGetAttribute(&mut v, 16, 0), "SMs");
        assert_eq!(v, 132);
        ok(cuDeviceGetAttribute(&mut v, 97, 0), "opt-in shared memory");
        assert_eq!(v, 227 * 1024);
        ok(cuDeviceGetAttribute(&mut v, 75, 0), "cc major");
        assert_eq!(v, 9);
        let mut name = [0 as std::ffi::c_char; 128];
        ok(cuDeviceGetName(name.as_mut_ptr(), 128, 0), "name");
        let name = CStr::from_ptr(name.as_ptr()).to_string_lossy();
        assert!(name.contains("emulated"), "{name}");
        let mut count = 0;
        ok(cuDeviceGetCount(&mut count), "count");
        assert_eq!(count, 1);
        assert_eq!(cuDeviceGet(&mut v, 1), INVALID_DEVICE);
    }
}

#[test]
fn launches_run_with_packed_parameters_and_copies_round_trip() {
    let c = setup();
    // SAFETY: the buffers outlive the calls; the parameter pointers match the kernel's layout.
    unsafe {
        let n = 1000u32;
        let host: Vec<f32> = (0..n).map(|i| i as f32 * 0.5).collect();
        let mut dptr = 0u64;
        ok(cuMemAlloc_v2(&mut dptr, n as usize * 4), "alloc");
        ok(
            cuMemcpyHtoD_v2(dptr, host.as_ptr() as *const c_void, n as usize * 4),
            "HtoD",
        );
        let mut stream = null_mut();
        ok(cuStreamCreate(&mut stream, 0), "stream");
        let v = 1.25f32;
        let mut args: [*mut c_void; 3] = [
            &dptr as *const u64 as *mut c_void,
            &n as *const u32 as *mut c_void,
            &v as *const f32 as *mut c_void,
        ];
        ok(
            cuLaunchKernel(
                c.add,
                4,
                1,
                1,
                256,
                1,
                1,
                0,
                stream,
                args.as_mut_ptr(),
                null_mut(),
            ),
            "launch",
        );
        ok(cuStreamSynchronize(stream), "sync");
        let mut back = vec![0f32; n as usize];
        ok(
            cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, dptr, n as usize * 4),
            "DtoH",
        );
        for (i, b) in back.iter().enumerate() {
            assert_eq!(*b, i as f32 * 0.5 + 1.25);
        }
        // Block limits: 1025 threads is invalid; a zero grid too.
        assert_eq!(
            cuLaunchKernel(
                c.add,
                1,
                1,
                1,
                1025,
                1,
                1,
                0,
                stream,
                args.as_mut_ptr(),
                null_mut()
            ),
            INVALID_VALUE
        );
        assert_eq!(
            cuLaunchKernel(
                c.add,
                0,
                1,
                1,
                32,
                1,
                1,
                0,
                stream,
                args.as_mut_ptr(),
                null_mut()
            ),
            INVALID_VALUE
        );
        // Too few blocks to cover n leave the rest untouched; a memset then a DtoD copy.
        ok(cuMemsetD32_v2(dptr, 0x3f80_0000, n as usize), "memset 1.0");
        let mut other = 0u64;
        ok(cuMemAlloc_v2(&mut other, n as usize * 4), "alloc 2");
        ok(cuMemcpyDtoD_v2(other, dptr, n as usize * 4), "DtoD");
        ok(
            cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, other, n as usize * 4),
            "DtoH 2",
        );
        assert!(back.iter().all(|&b| b == 1.0));
        ok(cuMemFree_v2(dptr), "free");
        ok(cuMemFree_v2(other), "free 2");
        assert_eq!(cuMemFree_v2(dptr), INVALID_VALUE, "double free");
        ok(cuStreamDestroy_v2(stream), "destroy");
    }
}

#[test]
fn more_than_48_kib_of_dynamic_shared_memory_needs_the_opt_in() {
    let c = setup();
    // SAFETY: as above.
    unsafe {
        let mut out = 0u64;
        ok(cuMemAlloc_v2(&mut out, 4 * 64), "alloc");
        let mut args: [*mut c_void; 1] = [&out as *const u64 as *mut c_void];
        let bytes = 64 * 1024;
        let r = cuLaunchKernel(
            c.big,
            1,
            1,
            1,
            64,
            1,
            1,
            bytes,
            null_mut(),
            args.as_mut_ptr(),
            null_mut(),
        );
        assert_eq!(r, INVALID_VALUE, "64 KiB without the opt-in");
        let mut limit = 0;
        ok(
            cuFuncGetAttribute(&mut limit, attributes::MAX_DYNAMIC_SHARED_SIZE_BYTES, c.big),
            "get",
        );
        assert_eq!(limit, 48 * 1024);
        assert_eq!(
            cuFuncSetAttribute(c.big, attributes::MAX_DYNAMIC_SHARED_SIZE_BYTES, 228 * 1024),
            INVALID_VALUE,
            "past the device's opt-in maximum"
        );
        ok(
            cuFuncSetAttribute(
                c.big,
                attributes::MAX_DYNAMIC_SHARED_SIZE_BYTES,
                bytes as i32,
            ),
            "opt in",
        );
        ok(
            cuLaunchKernel(
                c.big,
                1,
                1,
                1,
                64,
                1,
                1,
                bytes,
                null_mut(),
                args.as_mut_ptr(),
                null_mut(),
            ),
            "64 KiB",
        );
        let mut back = [0u32; 64];
        ok(
            cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, out, 256),
            "DtoH",
        );
        assert_eq!(back.to_vec(), (0..64).collect::<Vec<u32>>());
        // Occupancy: 64 KiB + 1 KiB reserved per block fit 3 times in 228 KiB.
        let mut blocks = 0;
        ok(
            cuOccupancyMaxActiveBlocksPerMultiprocessor(&mut blocks, c.big, 64, bytes as usize),
            "occupancy",
        );
        assert_eq!(blocks, 3);
    }
}

#[test]
fn a_finding_fails_the_launch_with_its_cuda_error() {
    let c = setup();
    // SAFETY: as above; the kernel is handed a buffer that is too small on purpose.
    unsafe {
        let mut small = 0u64;
        ok(cuMemAlloc_v2(&mut small, 16), "alloc");
        ok(cuMemsetD8_v2(small, 0, 16), "memset");
        let n = 5u32; // one element more than the buffer holds
        let v = 1.0f32;
        let mut args: [*mut c_void; 3] = [
            &small as *const u64 as *mut c_void,
            &n as *const u32 as *mut c_void,
            &v as *const f32 as *mut c_void,
        ];
        let r = cuLaunchKernel(
            c.add,
            1,
            1,
            1,
            32,
            1,
            1,
            0,
            null_mut(),
            args.as_mut_ptr(),
            null_mut(),
        );
        assert_eq!(r, 700, "CUDA_ERROR_ILLEGAL_ADDRESS");
        let mut text = null();
        ok(cuGetErrorString(r, &mut text), "error string");
        let text = CStr::from_ptr(text).to_string_lossy();
        assert!(
            text.contains("memcheck") && text.contains("kernel add"),
            "{text}"
        );
        // The context stays usable (findings are not sticky).
        let n = 4u32;
        let mut args: [*mut c_void; 3] = [
            &small as *const u64 as *mut c_void,
            &n as *const u32 as *mut c_void,
            &v as *const f32 as *mut c_void,
        ];
        ok(
            cuLaunchKernel(
                c.add,
                1,
                1,
                1,
                32,
                1,
                1,
                0,
                null_mut(),
                args.as_mut_ptr(),
                null_mut(),
            ),
            "in bounds",
        );
    }
}

#[test]
fn capture_records_and_graph_launch_replays_in_order() {
    let c = setup();
    // SAFETY: as above.
    unsafe {
        let n = 64u32;
        let mut dptr = 0u64;
        ok(cuMemAlloc_v2(&mut dptr, n as usize * 4), "alloc");
        let mut stream = null_mut();
        ok(cuStreamCreate(&mut stream, 0), "stream");
        let (zero, two, three) = (0f32, 2f32, 3f32);
        ok(cuStreamBeginCapture_v2(stream, 1), "begin");
        let mut status = 0;
        ok(cuStreamIsCapturing(stream, &mut status), "is capturing");
        assert_eq!(status, 1);
        // Recorded, not run: memset to 0, add 2, add 3.
        ok(
            cuMemsetD32Async(dptr, zero.to_bits(), n as usize, stream),
            "memset",
        );
        for v in [&two, &three] {
            let mut args: [*mut c_void; 3] = [
                &dptr as *const u64 as *mut c_void,
                &n as *const u32 as *mut c_void,
                v as *const f32 as *mut c_void,
            ];
            ok(
                cuLaunchKernel(
                    c.add,
                    1,
                    1,
                    1,
                    64,
                    1,
                    1,
                    0,
                    stream,
                    args.as_mut_ptr(),
                    null_mut(),
                ),
                "captured launch",
            );
        }
        assert_eq!(
            cuStreamSynchronize(stream),
            STREAM_CAPTURE_UNSUPPORTED,
            "no sync while capturing"
        );
        let mut graph = null_mut();
        assert_eq!(
            cuStreamEndCapture(stream, &mut graph),
            STREAM_CAPTURE_INVALIDATED
        );
        // Capture again without the illegal synchronisation.
        ok(cuStreamBeginCapture_v2(stream, 1), "begin again");
        ok(
            cuMemsetD32Async(dptr, zero.to_bits(), n as usize, stream),
            "memset",
        );
        for v in [&two, &three] {
            let mut args: [*mut c_void; 3] = [
                &dptr as *const u64 as *mut c_void,
                &n as *const u32 as *mut c_void,
                v as *const f32 as *mut c_void,
            ];
            ok(
                cuLaunchKernel(
                    c.add,
                    1,
                    1,
                    1,
                    64,
                    1,
                    1,
                    0,
                    stream,
                    args.as_mut_ptr(),
                    null_mut(),
                ),
                "captured launch",
            );
        }
        ok(cuStreamEndCapture(stream, &mut graph), "end");
        let mut exec = null_mut();
        ok(
            cuGraphInstantiateWithFlags(&mut exec, graph, 0),
            "instantiate",
        );
        let (mut start, mut end) = (null_mut(), null_mut());
        ok(cuEventCreate(&mut start, 0), "event");
        ok(cuEventCreate(&mut end, 0), "event");
        for _ in 0..3 {
            ok(cuEventRecord(start, stream), "record");
            ok(cuGraphLaunch(exec, stream), "replay");
            ok(cuEventRecord(end, stream), "record");
            let mut back = vec![0f32; n as usize];
            ok(
                cuMemcpyDtoH_v2(back.as_mut_ptr() as *mut c_void, dptr, n as usize * 4),
                "DtoH",
            );
            assert!(
                back.iter().all(|&b| b == 5.0),
                "each replay starts from the memset"
            );
        }
        let mut ms = -1f32;
        ok(cuEventElapsedTime(&mut ms, start, end), "elapsed");
        assert!(ms >= 0.0, "emulator time between the records: {ms}");
        ok(cuGraphExecDestroy(exec), "destroy exec");
        ok(cuGraphDestroy(graph), "destroy graph");
        assert_eq!(cuGraphLaunch(exec, stream), INVALID_HANDLE);
    }
}

#[test]
fn unknown_handles_and_names_are_errors_not_crashes() {
    let c = setup();
    // SAFETY: deliberately bad handles and names; the emulator must refuse them.
    unsafe {
        let mut f = null_mut();
        assert_eq!(cuModuleGetFunction(&mut f, c.module, c"nope".as_ptr()), 500);
        assert_eq!(cuStreamSynchronize(0xdead_0000 as Handle), INVALID_HANDLE);
        assert_eq!(cuEventQuery(0xdead_0000 as Handle), INVALID_HANDLE);
        let mut v = 0;
        assert_eq!(
            cuFuncGetAttribute(&mut v, 0, 0xdead_0000 as Handle),
            INVALID_HANDLE
        );
        let garbage = [0x12u8, 0x34, 0x56, 0x78, 0];
        let mut m = null_mut();
        assert_ne!(
            cuModuleLoadData(&mut m, garbage.as_ptr() as *const c_void),
            SUCCESS
        );
        let bad_ptx =
            c".version 8.0\n.target sm_80\n.address_size 64\n.visible .entry k() { foo.bar; }";
        assert_eq!(
            cuModuleLoadData(&mut m, bad_ptx.as_ptr() as *const c_void),
            218,
            "CUDA_ERROR_INVALID_PTX"
        );
    }
}
