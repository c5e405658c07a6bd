//! Running small PTX programs on the emulator from tests: load, allocate, launch, read back.
#![allow(dead_code)]

use ptx_emu::{Check, Checks, DeviceSpec, EmuError, Emulator, LaunchDims};
use std::sync::Arc;

/// An emulated H200 with every check on.
pub fn emu() -> Emulator {
    Emulator::new(DeviceSpec::H200)
}

/// A kernel argument.
#[derive(Clone, Copy, Debug)]
pub enum Arg {
    /// A pointer or 64-bit integer.
    U64(u64),
    /// A 32-bit integer.
    I32(i32),
    /// A 32-bit float.
    F32(f32),
}

/// A fixture's PTX text (tests/fixtures/<path>).
pub fn fixture(path: &str) -> String {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// A device buffer holding `data`.
pub fn upload<T: Copy>(e: &Emulator, data: &[T]) -> u64 {
    let bytes = std::mem::size_of_val(data);
    let addr = e.memory().alloc(bytes.max(1) as u64);
    // SAFETY: reading the bytes of plain Copy values.
    let raw = unsafe { std::slice::from_raw_parts(data.as_ptr() as *const u8, bytes) };
    e.memory().write(addr, raw).unwrap();
    addr
}

/// An uninitialised device buffer of `n` values of `T`.
pub fn alloc<T>(e: &Emulator, n: usize) -> u64 {
    e.memory()
        .alloc((n * std::mem::size_of::<T>()).max(1) as u64)
}

/// Read `n` values of `T` back.
pub fn download<T: Copy + Default>(e: &Emulator, addr: u64, n: usize) -> Vec<T> {
    let mut out = vec![T::default(); n];
    // SAFETY: writing the bytes of plain Copy values.
    let raw = unsafe {
        std::slice::from_raw_parts_mut(out.as_mut_ptr() as *mut u8, n * std::mem::size_of::<T>())
    };
    e.memory().read(addr, raw).unwrap();
    out
}

/// Launch `kernel` of the PTX `text` with `args`.
pub fn launch(
    e: &Emulator,
    text: &str,
    kernel: &str,
    grid: u32,
    block: u32,
    args: &[Arg],
) -> Result<ptx_emu::LaunchSummary, EmuError> {
    let m = e.load_ptx(text).expect("the PTX loads");
    launch_module(e, &m, kernel, grid, block, args)
}

/// Launch `kernel` of a loaded module.
pub fn launch_module(
    e: &Emulator,
    m: &Arc<ptx_emu::Module>,
    kernel: &str,
    grid: u32,
    block: u32,
    args: &[Arg],
) -> Result<ptx_emu::LaunchSummary, EmuError> {
    let f = e.function(m, kernel).expect("the kernel exists");
    let values: Vec<[u8; 8]> = args
        .iter()
        .map(|a| match a {
            Arg::U64(v) => v.to_le_bytes(),
            Arg::I32(v) => (*v as i64 as u64).to_le_bytes(),
            Arg::F32(v) => (v.to_bits() as u64).to_le_bytes(),
        })
        .collect();
    let ptrs: Vec<*const u8> = values.iter().map(|v| v.as_ptr()).collect();
    // SAFETY: each pointer addresses 8 bytes, at least the size of any parameter used here.
    let params = unsafe { e.pack_params(&f, &ptrs) }?;
    e.launch(
        &f,
        &LaunchDims {
            grid: [grid, 1, 1],
            block: [block, 1, 1],
            dynamic_smem: 0,
        },
        &params,
    )
}

/// The finding of a failed launch, asserting that there is one from `check`.
pub fn expect_finding(
    r: Result<ptx_emu::LaunchSummary, EmuError>,
    check: Check,
) -> ptx_emu::Finding {
    match r {
        Ok(_) => panic!("the launch succeeded; expected a {} finding", check.name()),
        Err(e) => {
            let f = e
                .finding
                .unwrap_or_else(|| panic!("the launch failed without a finding: {}", e.message));
            assert_eq!(f.check, check, "unexpected finding: {f}");
            eprintln!("finding (expected): {f}");
            *f
        }
    }
}

/// Every check off (to run a mutant to completion and inspect its results).
pub const NO_CHECKS: Checks = Checks {
    memcheck: false,
    racecheck: false,
    initcheck: false,
    synccheck: false,
};
