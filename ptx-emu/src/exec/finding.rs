//! Findings: what the checks report, where, and the CUDA error a launch fails with.

use std::fmt;

/// The sanitizer check (or other cause) behind a finding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Check {
    /// Out-of-bounds or misaligned access to global, shared or local memory.
    Memcheck,
    /// A shared-memory hazard between threads, or an access to a `cp.async` destination before
    /// its `wait_group`.
    Racecheck,
    /// A read of global or shared bytes that nothing wrote.
    Initcheck,
    /// A barrier or warp collective reached by only part of its threads, an invalid member mask,
    /// or a deadlock.
    Synccheck,
    /// The kernel executed `trap`, ran past the instruction limit, or used an unsupported feature.
    Execution,
}

impl Check {
    /// The check's name as printed (`memcheck`, ...).
    pub fn name(self) -> &'static str {
        match self {
            Check::Memcheck => "memcheck",
            Check::Racecheck => "racecheck",
            Check::Initcheck => "initcheck",
            Check::Synccheck => "synccheck",
            Check::Execution => "execution",
        }
    }
}

/// One finding of a launch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// The check that found it.
    pub check: Check,
    /// A short category, e.g. `out-of-bounds global load`.
    pub what: String,
    /// The kernel.
    pub kernel: String,
    /// PTX line of the instruction.
    pub ptx_line: u32,
    /// `file:line` of the CUDA source, from `.loc`, when known.
    pub source: Option<String>,
    /// Block index.
    pub block: [u32; 3],
    /// Thread index within the block.
    pub thread: [u32; 3],
    /// The address involved, when there is one.
    pub address: Option<u64>,
    /// The details.
    pub message: String,
    /// The CUDA driver error the launch fails with.
    pub error: u32,
}

/// CUDA driver error codes used for findings.
pub mod codes {
    /// CUDA_ERROR_ILLEGAL_ADDRESS
    pub const ILLEGAL_ADDRESS: u32 = 700;
    /// CUDA_ERROR_LAUNCH_TIMEOUT
    pub const LAUNCH_TIMEOUT: u32 = 702;
    /// CUDA_ERROR_ILLEGAL_INSTRUCTION
    pub const ILLEGAL_INSTRUCTION: u32 = 715;
    /// CUDA_ERROR_MISALIGNED_ADDRESS
    pub const MISALIGNED_ADDRESS: u32 = 716;
    /// CUDA_ERROR_LAUNCH_FAILED
    pub const LAUNCH_FAILED: u32 = 719;
    /// CUDA_ERROR_NOT_SUPPORTED
    pub const NOT_SUPPORTED: u32 = 801;
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} in kernel {} at PTX line {}",
            self.check.name(),
            self.what,
            self.kernel,
            self.ptx_line
        )?;
        if let Some(src) = &self.source {
            write!(f, " ({src})")?;
        }
        write!(
            f,
            ", block ({}, {}, {}), thread ({}, {}, {})",
            self.block[0],
            self.block[1],
            self.block[2],
            self.thread[0],
            self.thread[1],
            self.thread[2]
        )?;
        if let Some(a) = self.address {
            write!(f, ", address {a:#x}")?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for Finding {}
