//! # ptx-emu
//!
//! An emulated CUDA GPU for machines without one. The crate builds a drop-in CUDA driver library
//! (`libptx_emu.so`, soname `libcuda.so`) exporting the part of the driver API that cudarc calls;
//! kernels are taken from their PTX (the fatbin's PTX entry, or PTX text) and interpreted on the CPU
//! with compute-sanitizer-style checks (memcheck, racecheck, initcheck, synccheck) and per-line
//! counters (instructions, warp efficiency, coalescing, bank conflicts, `mma`).
//!
//! The same machine is available as a Rust API, [`Emulator`], which the emulator's own tests use.
//! See the README for what is supported and how to read a finding.

#![warn(missing_docs)]

pub mod device;
pub mod driver;
mod emulator;
pub mod exec;
pub mod fatbin;
pub mod libraries;
mod profile;
pub(crate) mod ptx;

pub use device::DeviceSpec;
pub use emulator::{
    attributes, errors, parse_checks, EmuError, Emulator, Function, LaunchDims, Module,
};
pub use exec::finding::{Check, Finding};
pub use exec::interp::{Checks, LaunchSummary};
pub use profile::Profile;
