//! The fatbin container parser (`ptx_emu::fatbin`) on fixtures built by nvcc 13.0 in every
//! compression mode, and against truncated, corrupted and fuzzed images.

mod common;
mod decode;
mod robustness;
