//! The kernels' index math compiled for the host (`kernels/host/*.cpp`, built by `build.rs` with the
//! `cc` crate), so that the code deciding which GPU thread computes what is tested against the CPU
//! reference on every machine, GPU or not. Not a stable API: it exists for the crate's tests.

mod routing;

pub use routing::{group_score, ranks_before};
