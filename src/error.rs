//! The crate's typed error.
//!
//! Every public function that can fail returns [`Result`]; bad input never panics and never produces a
//! silently wrong answer. Each variant names what was wrong precisely enough to act on.

use crate::dtype::DType;

/// Result alias used throughout the crate.
pub type Result<T, E = MoeError> = std::result::Result<T, E>;

/// Everything that can go wrong in this crate.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MoeError {
    /// A tensor or buffer does not have the shape an operation needs.
    #[error("shape mismatch for {what}: expected {expected}, found {found}")]
    ShapeMismatch {
        /// Which argument or tensor.
        what: String,
        /// The shape (or length) that was expected.
        expected: String,
        /// The shape (or length) that was found.
        found: String,
    },

    /// A tensor has a different element type than the operation needs.
    #[error("dtype mismatch for {what}: expected {expected}, found {found}")]
    DTypeMismatch {
        /// Which argument or tensor.
        what: String,
        /// The element type that was expected.
        expected: DType,
        /// The element type that was found.
        found: DType,
    },

    /// A configuration value is invalid (for example `k > E`, or a group count that does not divide `E`).
    #[error("invalid configuration: {0}")]
    InvalidConfig(String),

    /// A routing decision names an expert that does not exist.
    #[error("expert id {id} at token {token}, slot {slot} is out of range for {num_experts} experts")]
    ExpertIdOutOfRange {
        /// Token (row of `topk_ids`).
        token: usize,
        /// Slot within the token's k choices.
        slot: usize,
        /// The offending id.
        id: i64,
        /// Number of experts.
        num_experts: usize,
    },

    /// The same expert is chosen twice for one token.
    #[error("expert {id} is chosen twice for token {token} (slots {first_slot} and {second_slot})")]
    DuplicateExpert {
        /// Token (row of `topk_ids`).
        token: usize,
        /// The repeated expert id.
        id: i64,
        /// First slot that chose it.
        first_slot: usize,
        /// Second slot that chose it.
        second_slot: usize,
    },

    /// A router logit (or a bias, weight or scale feeding routing) is NaN or infinite.
    #[error("non-finite {what} at token {token}, expert {expert}: {value}")]
    NonFinite {
        /// What held the value (`"router logit"`, `"correction bias"`, `"routing weight"`).
        what: &'static str,
        /// Token index (0 for per-expert quantities such as the bias).
        token: usize,
        /// Expert index.
        expert: usize,
        /// The value found.
        value: f32,
    },

    /// A size computation would overflow the index type (for example `T * k * H` past `usize`).
    #[error("size overflow computing {0}")]
    SizeOverflow(String),

    /// The operation cannot take this size or layout (a kernel limit, or a feature not implemented).
    #[error("unsupported: {0}")]
    Unsupported(String),

    /// The GPU kernels were not compiled into this build (no nvcc was found at build time).
    #[error(
        "the CUDA kernels were not built into this copy of moe-kernels: nvcc was not found at build time \
         (install it with scripts/install-cuda-toolchain.sh and set NVCC, then rebuild)"
    )]
    KernelsNotBuilt,

    /// No usable CUDA device: the driver library is missing, or it found no GPU.
    #[error("no CUDA device: {0}")]
    NoCudaDevice(String),

    /// An error reported by the CUDA driver.
    #[error("CUDA driver error: {0}")]
    Cuda(#[from] cudarc::driver::DriverError),
}

impl MoeError {
    /// Shorthand for a [`MoeError::ShapeMismatch`].
    pub(crate) fn shape(
        what: impl Into<String>,
        expected: impl std::fmt::Display,
        found: impl std::fmt::Display,
    ) -> Self {
        MoeError::ShapeMismatch {
            what: what.into(),
            expected: expected.to_string(),
            found: found.to_string(),
        }
    }
}
