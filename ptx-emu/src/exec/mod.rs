//! Execution: device memory, kernel preparation, the interpreter, its checks and counters.

pub(crate) mod alu;
pub mod finding;
pub mod float;
pub mod interp;
pub mod kernel;
pub mod memory;
pub mod stats;
