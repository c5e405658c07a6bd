//! The instruction set the fast backend's kernels are compiled for, chosen at run time.

use std::sync::OnceLock;

use crate::error::{MoeError, Result};

/// A build of the fast kernels. Every build computes the same dot products over the same lanes in
/// the same order; they differ in width and in whether a multiply and an add are fused, so results
/// can differ by rounding between builds, never between thread counts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust on 16-lane arrays, for any CPU.
    Portable,
    /// The portable code compiled with AVX2 and FMA enabled (x86-64).
    Avx2,
    /// AVX-512 (F, BW, VL) intrinsics: weights widened in registers, fused multiply-adds (x86-64).
    Avx512,
    /// [`Isa::Avx512`], and for bf16 activations with bf16 weights the AVX512-BF16 dot product
    /// `vdpbf16ps` on the stored values (pairs of exact products added into `f32` lanes; subnormal
    /// inputs and results flushed to zero) (x86-64).
    Avx512Bf16,
    /// [`Isa::Avx512Bf16`], and for bf16 activations with bf16 weights in blocks of at least 8 rows
    /// (`N` a multiple of 16, `K` of 32) AMX-BF16 tile products (x86-64 Linux).
    Amx,
}

impl Isa {
    /// Every build, from the most portable.
    pub const ALL: [Isa; 5] = [
        Isa::Portable,
        Isa::Avx2,
        Isa::Avx512,
        Isa::Avx512Bf16,
        Isa::Amx,
    ];

    /// The best build this CPU runs (detected once).
    pub fn best() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            [Isa::Amx, Isa::Avx512Bf16, Isa::Avx512, Isa::Avx2]
                .into_iter()
                .find(|isa| isa.available())
                .unwrap_or(Isa::Portable)
        })
    }

    /// Whether this CPU runs this build.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                    && std::arch::is_x86_feature_detected!("fma")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512Bf16 => {
                Isa::Avx512.available() && std::arch::is_x86_feature_detected!("avx512bf16")
            }
            #[cfg(target_arch = "x86_64")]
            Isa::Amx => super::amx::available(),
            #[cfg(not(target_arch = "x86_64"))]
            Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => false,
        }
    }

    /// This build if the CPU runs it, else [`MoeError::InvalidConfig`] naming it.
    pub fn check(self) -> Result<Isa> {
        if self.available() {
            Ok(self)
        } else {
            Err(MoeError::InvalidConfig(format!(
                "the {} build of the fast CPU kernels needs instructions this CPU lacks",
                self.name()
            )))
        }
    }

    /// Lower-case name (`portable`, `avx2`, `avx512`, `avx512-bf16`, `amx`).
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Avx512Bf16 => "avx512-bf16",
            Isa::Amx => "amx",
        }
    }
}
