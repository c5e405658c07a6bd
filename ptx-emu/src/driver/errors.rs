//! CUresult values and their names and descriptions (`cuGetErrorName`, `cuGetErrorString`).

/// A CUDA driver result code.
pub type CuResult = u32;

/// CUDA_SUCCESS
pub const SUCCESS: CuResult = 0;
/// CUDA_ERROR_INVALID_VALUE
pub const INVALID_VALUE: CuResult = 1;
/// CUDA_ERROR_OUT_OF_MEMORY
pub const OUT_OF_MEMORY: CuResult = 2;
/// CUDA_ERROR_NOT_INITIALIZED
pub const NOT_INITIALIZED: CuResult = 3;
/// CUDA_ERROR_NO_DEVICE
pub const NO_DEVICE: CuResult = 100;
/// CUDA_ERROR_INVALID_DEVICE
pub const INVALID_DEVICE: CuResult = 101;
/// CUDA_ERROR_INVALID_CONTEXT
pub const INVALID_CONTEXT: CuResult = 201;
/// CUDA_ERROR_INVALID_HANDLE
pub const INVALID_HANDLE: CuResult = 400;
/// CUDA_ERROR_ILLEGAL_STATE
pub const ILLEGAL_STATE: CuResult = 401;
/// CUDA_ERROR_NOT_FOUND
pub const NOT_FOUND: CuResult = 500;
/// CUDA_ERROR_NOT_SUPPORTED
pub const NOT_SUPPORTED: CuResult = 801;
/// CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED
pub const STREAM_CAPTURE_UNSUPPORTED: CuResult = 900;
/// CUDA_ERROR_STREAM_CAPTURE_INVALIDATED
pub const STREAM_CAPTURE_INVALIDATED: CuResult = 901;
/// CUDA_ERROR_UNKNOWN
pub const UNKNOWN: CuResult = 999;

/// (code, name, description) of the codes the emulator returns.
const TABLE: &[(CuResult, &str, &str)] = &[
    (0, "CUDA_SUCCESS\0", "no error\0"),
    (1, "CUDA_ERROR_INVALID_VALUE\0", "invalid argument\0"),
    (2, "CUDA_ERROR_OUT_OF_MEMORY\0", "out of memory\0"),
    (3, "CUDA_ERROR_NOT_INITIALIZED\0", "initialization error\0"),
    (
        100,
        "CUDA_ERROR_NO_DEVICE\0",
        "no CUDA-capable device is detected\0",
    ),
    (
        101,
        "CUDA_ERROR_INVALID_DEVICE\0",
        "invalid device ordinal\0",
    ),
    (
        200,
        "CUDA_ERROR_INVALID_IMAGE\0",
        "device kernel image is invalid\0",
    ),
    (
        201,
        "CUDA_ERROR_INVALID_CONTEXT\0",
        "invalid device context\0",
    ),
    (
        209,
        "CUDA_ERROR_NO_BINARY_FOR_GPU\0",
        "no kernel image is available for execution on the device\0",
    ),
    (
        218,
        "CUDA_ERROR_INVALID_PTX\0",
        "a PTX JIT compilation failed\0",
    ),
    (
        400,
        "CUDA_ERROR_INVALID_HANDLE\0",
        "invalid resource handle\0",
    ),
    (
        401,
        "CUDA_ERROR_ILLEGAL_STATE\0",
        "the operation cannot be performed in the present state\0",
    ),
    (500, "CUDA_ERROR_NOT_FOUND\0", "named symbol not found\0"),
    (600, "CUDA_ERROR_NOT_READY\0", "device not ready\0"),
    (
        700,
        "CUDA_ERROR_ILLEGAL_ADDRESS\0",
        "an illegal memory access was encountered\0",
    ),
    (
        701,
        "CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES\0",
        "too many resources requested for launch\0",
    ),
    (
        702,
        "CUDA_ERROR_LAUNCH_TIMEOUT\0",
        "the launch timed out and was terminated\0",
    ),
    (
        715,
        "CUDA_ERROR_ILLEGAL_INSTRUCTION\0",
        "an illegal instruction was encountered\0",
    ),
    (
        716,
        "CUDA_ERROR_MISALIGNED_ADDRESS\0",
        "misaligned address\0",
    ),
    (
        719,
        "CUDA_ERROR_LAUNCH_FAILED\0",
        "unspecified launch failure\0",
    ),
    (
        801,
        "CUDA_ERROR_NOT_SUPPORTED\0",
        "operation not supported\0",
    ),
    (
        900,
        "CUDA_ERROR_STREAM_CAPTURE_UNSUPPORTED\0",
        "operation not permitted when stream is capturing\0",
    ),
    (
        901,
        "CUDA_ERROR_STREAM_CAPTURE_INVALIDATED\0",
        "operation failed due to a previous error during capture\0",
    ),
    (999, "CUDA_ERROR_UNKNOWN\0", "unknown error\0"),
];

/// The name and description of a code, NUL-terminated.
pub(crate) fn describe(code: CuResult) -> Option<(&'static str, &'static str)> {
    TABLE
        .iter()
        .find(|(c, _, _)| *c == code)
        .map(|(_, n, d)| (*n, *d))
}
