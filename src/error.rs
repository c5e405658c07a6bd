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
    #[error(
        "expert id {id} at token {token}, slot {slot} is out of range for {num_experts} experts"
    )]
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
    #[error(
        "expert {id} is chosen twice for token {token} (slots {first_slot} and {second_slot})"
    )]
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

    /// A quantization scale is NaN, infinite, zero or negative.
    #[error(
        "invalid scale in {what} at index {index}: {value} (scales must be finite and positive)"
    )]
    BadScale {
        /// Which scales.
        what: String,
        /// The index of the first bad one.
        index: usize,
        /// Its value.
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

    /// A file could not be opened, read, mapped or written. The message includes the operating system's
    /// reason.
    #[error("cannot access {}: {error}", path.display())]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// The operating system's error.
        error: std::io::Error,
    },

    /// A file exists but its contents cannot be parsed (malformed JSON, a truncated or corrupt safetensors
    /// header, an index whose `weight_map` is not a map of strings).
    #[error("{} is malformed: {message}", path.display())]
    MalformedFile {
        /// The file.
        path: std::path::PathBuf,
        /// What is wrong with it.
        message: String,
    },

    /// A model directory holds neither `model.safetensors` nor `model.safetensors.index.json`.
    #[error(
        "no checkpoint in {}: it holds neither model.safetensors nor model.safetensors.index.json",
        dir.display()
    )]
    NoCheckpoint {
        /// The model directory.
        dir: std::path::PathBuf,
    },

    /// A tensor the model needs is not in the checkpoint.
    #[error("tensor `{key}` is missing from {file}")]
    MissingTensor {
        /// The tensor's key (Hugging Face name).
        key: String,
        /// The file that should hold it (the shard, or the index that does not list it).
        file: String,
    },

    /// A checkpoint tensor has a different shape than the model config implies.
    #[error("tensor `{key}` in {file} has shape {found:?}, expected {expected:?}")]
    TensorShape {
        /// The tensor's key.
        key: String,
        /// The file holding it.
        file: String,
        /// The shape the config implies.
        expected: Vec<usize>,
        /// The shape stored in the file.
        found: Vec<usize>,
    },

    /// A checkpoint tensor is stored in another element type than the one it must have: BF16, F16 or
    /// F32 for plain weights (not I64, say), F8_E4M3 for the codes of FP8-quantized ones.
    #[error("tensor `{key}` in {file} is stored as {found}; expected {expected}")]
    TensorDType {
        /// The tensor's key.
        key: String,
        /// The file holding it.
        file: String,
        /// The stored element type, as the safetensors header names it.
        found: String,
        /// The element types it may have.
        expected: String,
    },

    /// A model (its `model_type`, activation, routing method or scoring function) that the crate does
    /// not implement.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),

    /// A layer index past the model's last layer.
    #[error(
        "layer {layer} is out of range: the model has {num_layers} layers (0 to {})",
        num_layers.saturating_sub(1)
    )]
    LayerOutOfRange {
        /// The layer asked for.
        layer: usize,
        /// The model's `num_hidden_layers`.
        num_layers: usize,
    },

    /// A dense (non-MoE) layer was asked for as an MoE layer.
    #[error("layer {layer} is a dense layer, not an MoE layer ({reason})")]
    NotMoeLayer {
        /// The layer asked for.
        layer: usize,
        /// Which config setting makes it dense.
        reason: String,
    },

    /// An error reported by candle (the `candle` feature): a tensor operation of candle's failed, for
    /// example because the tensors of one call live on different devices.
    #[cfg(feature = "candle")]
    #[error("candle: {0}")]
    Candle(#[from] candle_core::Error),

    /// A candle tensor has an element type the operation does not take (the `candle` feature).
    #[cfg(feature = "candle")]
    #[error("dtype mismatch for {what}: expected {expected}, found {}", found.as_str())]
    CandleDType {
        /// Which argument.
        what: String,
        /// The element types the operation takes.
        expected: String,
        /// The tensor's element type.
        found: candle_core::DType,
    },

    /// A candle tensor is not contiguous (row-major and densely packed), as every operation of
    /// [`candle`](crate::candle) needs; a start offset into the storage is fine. `Tensor::contiguous`
    /// makes a contiguous copy.
    #[cfg(feature = "candle")]
    #[error(
        "{what} is not contiguous (shape {shape:?}, strides {stride:?}): make it contiguous first \
         (Tensor::contiguous)"
    )]
    NonContiguous {
        /// Which argument.
        what: String,
        /// The tensor's shape.
        shape: Vec<usize>,
        /// The tensor's strides, in elements.
        stride: Vec<usize>,
    },
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
