//! The CPU reference path: every stage of the MoE forward in plain, obviously-correct Rust.
//!
//! All arithmetic is `f32`; inputs and outputs may be `f32`, `bf16` or `f16` ([`Element`]). Where a stage
//! writes a lower-precision output it rounds once, at the same point the GPU kernels do, so GPU results
//! can be compared against this path stage by stage. Inputs are never modified.
//!
//! [`Element`]: crate::Element

pub mod activation;
pub mod combine;
pub mod gemm;
pub mod layer;
pub mod permute;
pub mod routing;

/// The logistic function `1 / (1 + exp(-x))`.
#[inline]
pub(crate) fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// `sum(a[i] * b[i])` in `f32`, with eight independent partial sums (added pairwise at the end) so the
/// compiler can vectorise it.
#[inline]
pub(crate) fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    debug_assert_eq!(a.len(), b.len());
    let mut acc = [0f32; 8];
    let chunks = a.len() / 8;
    for c in 0..chunks {
        let (x, y) = (&a[c * 8..c * 8 + 8], &b[c * 8..c * 8 + 8]);
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut tail = 0f32;
    for i in chunks * 8..a.len() {
        tail += a[i] * b[i];
    }
    let s4 = [
        acc[0] + acc[4],
        acc[1] + acc[5],
        acc[2] + acc[6],
        acc[3] + acc[7],
    ];
    (s4[0] + s4[2]) + (s4[1] + s4[3]) + tail
}
