//! The fast CPU backend of the expert GEMMs: the same grouped GEMMs as [`cpu::gemm`](super::gemm)
//! (`Y[rows of e] = X[rows of e] @ W_e^T`, with the activation fused into the up projection), written
//! for speed instead of for obviousness, and tested against the reference and a float64 oracle.
//!
//! [`CpuMoeLayer`](super::layer::CpuMoeLayer) runs its expert GEMMs (routed and shared) on the backend
//! it holds, [`CpuBackend::Fast`] unless told otherwise; routing, permutation, the rounding points and
//! the combine are the layer's, the same for both backends.
//!
//! # Kernels
//!
//! Weights are read in their stored format (f32, bf16, f16, or FP8 e4m3 or MXFP4 e2m1 codes with
//! their scales, [`WeightSource`]) and widened to `f32` in registers, 16 columns (`LANES`) at a time; activations are
//! widened once per call. A tile computes `MR x NR` (4 x 4) dot products at once, so each weight
//! chunk loaded serves up to `MR` activation rows and each activation chunk `NR` weight rows: at one
//! token this is a GEMV that streams the weights once, with more rows it is a small GEMM whose
//! weight rows stay in cache for the row block. The build is chosen at run time ([`Isa`]): AVX-512
//! intrinsics, the portable code compiled for AVX2 + FMA, or the portable code alone.
//!
//! # Work decomposition
//!
//! Each expert's rows are cut into blocks of at most `M_BLOCK` rows (`BATCH_ROWS` for AMX tiles: a
//! block reads its expert's weights once, whatever its rows); consecutive blocks (of one or
//! several experts) are batched up to `BATCH_ROWS` rows, whose `f32` accumulators `[rows, N]` are
//! computed by parallel tasks, one per (row block, strip of weight rows), then handed to the epilogue
//! (activation, rounding), in parallel over rows. Threads split rows and weight rows, never a dot
//! product: every accumulator is one dot in a fixed order, so the result does not depend on the
//! thread count.

#[cfg(target_arch = "x86_64")]
mod amx;
#[cfg(target_arch = "x86_64")]
mod avx512;
mod isa;
mod portable;
mod silu;

use half::{bf16, f16};
use rayon::prelude::*;
use std::any::TypeId;

pub use isa::Isa;

use super::gemm::{validate_offsets, ExpertRows};
use super::CACHE_LINE;
use crate::config::Activation;
use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::quant::{fp8_e4m3_has_nan, CodeFormat, QuantExperts};
use crate::view::{MatMut, MatRef};

/// Which implementation runs a CPU layer's expert GEMMs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CpuBackend {
    /// This module's kernels, on the best [`Isa`] of the CPU (the default).
    #[default]
    Fast,
    /// The obviously-correct reference, [`cpu::gemm`](super::gemm).
    Reference,
}

impl CpuBackend {
    /// Lower-case name (`fast`, `reference`).
    pub fn name(self) -> &'static str {
        match self {
            CpuBackend::Fast => "fast",
            CpuBackend::Reference => "reference",
        }
    }

    /// [`grouped_gemm`] on this backend (the fast one on [`Isa::best`]).
    pub fn grouped_gemm<X: Element, Y: Element>(
        self,
        x: MatRef<'_, X>,
        offsets: &[usize],
        w: impl ExpertRows,
        out: &mut MatMut<'_, Y>,
    ) -> Result<()> {
        match self {
            CpuBackend::Fast => grouped_gemm(Isa::best(), x, offsets, w, out),
            CpuBackend::Reference => super::gemm::grouped_gemm(x, offsets, w, out),
        }
    }

    /// [`grouped_gemm_activation`] on this backend (the fast one on [`Isa::best`]).
    pub fn grouped_gemm_activation<X: Element, Y: Element>(
        self,
        x: MatRef<'_, X>,
        offsets: &[usize],
        w: impl ExpertRows,
        act: Activation,
        out: &mut MatMut<'_, Y>,
    ) -> Result<()> {
        match self {
            CpuBackend::Fast => grouped_gemm_activation(Isa::best(), x, offsets, w, act, out),
            CpuBackend::Reference => super::gemm::grouped_gemm_activation(x, offsets, w, act, out),
        }
    }
}

impl std::str::FromStr for CpuBackend {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "fast" => Ok(CpuBackend::Fast),
            "reference" => Ok(CpuBackend::Reference),
            other => Err(format!(
                "unknown CPU backend `{other}` (expected fast or reference)"
            )),
        }
    }
}

/// Expert weights `[E, N, K]` in their stored format, as the fast kernels read them.
#[derive(Clone, Copy, Debug)]
pub enum WeightSource<'a> {
    /// `f32` values.
    F32(&'a [f32]),
    /// bf16 values.
    Bf16(&'a [bf16]),
    /// f16 values.
    F16(&'a [f16]),
    /// FP8 e4m3 codes with one `f32` scale per row and group of `group` columns
    /// (`[E, N, ceil(K / group)]`), as [`QuantExperts`] holds them.
    Fp8E4M3 {
        /// The codes `[E, N, K]`.
        codes: Fp8Codes<'a>,
        /// The scales `[E, N, ceil(K / group)]`.
        scales: &'a [f32],
        /// Columns per scale.
        group: usize,
    },
    /// MXFP4's FP4 e2m1 codes, two per byte (low nibble first, each row
    /// [`CodeFormat::row_bytes`](crate::quant::CodeFormat::row_bytes) bytes), with one `f32` scale
    /// per row and group of `group` columns, as [`QuantExperts`] holds
    /// them.
    Mxfp4E2M1 {
        /// The codes `[E, N, ceil(K / 2)]`.
        codes: &'a [u8],
        /// The scales `[E, N, ceil(K / group)]`.
        scales: &'a [f32],
        /// Columns per scale.
        group: usize,
    },
}

/// FP8 e4m3 codes, with whether any of them is a NaN (`0x7f`, `0xff`), found once when they were
/// wrapped: the AVX-512 kernels decode codes without NaNs by one instruction fewer.
#[derive(Clone, Copy, Debug)]
pub struct Fp8Codes<'a> {
    codes: &'a [u8],
    nan: bool,
}

impl<'a> Fp8Codes<'a> {
    /// The codes, looked through once for NaNs (wrap them once where they are stored, as
    /// [`QuantExperts`] does).
    pub fn new(codes: &'a [u8]) -> Self {
        Fp8Codes {
            codes,
            nan: fp8_e4m3_has_nan(codes),
        }
    }

    /// The codes of `q`, which looked through them when it was built.
    pub(crate) fn of(q: &'a QuantExperts) -> Self {
        Fp8Codes {
            codes: q.codes(),
            nan: q.has_nan_codes(),
        }
    }

    /// The codes.
    pub fn codes(self) -> &'a [u8] {
        self.codes
    }

    /// Whether any code is a NaN.
    pub fn has_nan(self) -> bool {
        self.nan
    }
}

impl<'a> WeightSource<'a> {
    /// Plain element weights as a source.
    pub fn plain<W: Element>(data: &'a [W]) -> WeightSource<'a> {
        let (ptr, len) = (data.as_ptr(), data.len());
        let id = TypeId::of::<W>();
        // SAFETY: each branch reinterprets the slice as its own element type, identified by
        // `TypeId` (same size, alignment and validity).
        unsafe {
            if id == TypeId::of::<f32>() {
                WeightSource::F32(std::slice::from_raw_parts(ptr.cast(), len))
            } else if id == TypeId::of::<bf16>() {
                WeightSource::Bf16(std::slice::from_raw_parts(ptr.cast(), len))
            } else if id == TypeId::of::<f16>() {
                WeightSource::F16(std::slice::from_raw_parts(ptr.cast(), len))
            } else {
                unreachable!("Element is implemented for f32, bf16 and f16 only")
            }
        }
    }

    /// Check that this source holds `[E, N, K]` weights (and their scales).
    fn check(&self, [e, n, k]: [usize; 3]) -> Result<()> {
        let rows = e * n;
        // The lengths to check of quantized weights: the codes', else the scales'.
        let quantized = |format: CodeFormat, codes: &[u8], scales: &[f32], group: usize| {
            if group == 0 {
                return Err(MoeError::InvalidConfig(
                    "a quantization scale group of 0 columns".into(),
                ));
            }
            Ok(if codes.len() != rows * format.row_bytes(k) {
                (
                    "expert weight codes",
                    codes.len(),
                    rows * format.row_bytes(k),
                )
            } else {
                (
                    "expert weight scales",
                    scales.len(),
                    rows * k.div_ceil(group),
                )
            })
        };
        let (what, len, want) = match *self {
            WeightSource::F32(d) => ("expert weights", d.len(), rows * k),
            WeightSource::Bf16(d) => ("expert weights", d.len(), rows * k),
            WeightSource::F16(d) => ("expert weights", d.len(), rows * k),
            WeightSource::Fp8E4M3 {
                codes,
                scales,
                group,
            } => quantized(CodeFormat::Fp8E4M3, codes.codes(), scales, group)?,
            WeightSource::Mxfp4E2M1 {
                codes,
                scales,
                group,
            } => quantized(CodeFormat::Mxfp4E2M1, codes, scales, group)?,
        };
        if len != want {
            return Err(MoeError::shape(
                what,
                format!("{want} values for [{e}, {n}, {k}]"),
                len,
            ));
        }
        Ok(())
    }
}

/// Columns of a dot product's chunk: one AVX-512 register of `f32`.
const LANES: usize = 16;
/// Activation rows of a register tile.
const MR: usize = 4;
/// Weight rows of a register tile.
const NR: usize = 4;
/// Most rows of one expert computed by one task.
const M_BLOCK: usize = 64;
/// Most rows whose accumulators are held at once (bounds the scratch to `BATCH_ROWS * N` floats).
const BATCH_ROWS: usize = 256;
/// Multiply-adds per task to aim for: smaller tasks cost more in scheduling than they save.
const TASK_GRAIN: usize = 1 << 17;

/// One piece of parallel work: the dot products of `m` activation rows (`xs`, `[m, K]`, in `f32`,
/// or as bf16 bits for [`Isa::Avx512Bf16`]) with `nb` consecutive weight rows starting at global row
/// `row0` (`e * N + n0`), written to `out[i * ostride + j]`.
struct Task<'a, A> {
    xs: &'a [A],
    m: usize,
    k: usize,
    row0: usize,
    nb: usize,
    out: OutPtr,
    ostride: usize,
}

/// The accumulators of a batch, written by several tasks at disjoint places.
#[derive(Clone, Copy)]
struct OutPtr(*mut f32);

// SAFETY: tasks write disjoint elements through it (see `Task::set`), and the batch's buffer
// outlives the parallel region.
unsafe impl Send for OutPtr {}
// SAFETY: as above.
unsafe impl Sync for OutPtr {}

impl<A> Task<'_, A> {
    /// Write output `(i, j)` of this task (`i < m`, `j < nb`).
    #[inline(always)]
    fn set(&self, i: usize, j: usize, v: f32) {
        assert!(i < self.m && j < self.nb, "task output out of range");
        // SAFETY: the batch's buffer holds `[rows, N]` accumulators; this task owns rows
        // `i < m` and columns `n0 + j`, `j < nb`, of it (`run_batch` builds tasks whose regions are
        // disjoint and in bounds).
        unsafe { *self.out.0.add(i * self.ostride + j) = v }
    }
}

/// Run a task's `MR x NR` tiles: `$tile::<_, mr, nr>(xs, k, w, row0, ahead, out)` for each tile,
/// with the tile's activation rows, first weight row, whether to prefetch the next `NR` weight rows
/// (in the first tile of each strip of `NR` weight rows), and output writer.
macro_rules! tile_dispatch {
    ($task:expr, $w:expr, $tile:ident) => {{
        use $crate::cpu::fast::{MR, NR};
        let task = $task;
        let w = $w;
        for j0 in (0..task.nb).step_by(NR) {
            let nr = NR.min(task.nb - j0);
            for i0 in (0..task.m).step_by(MR) {
                let mr = MR.min(task.m - i0);
                let xs = &task.xs[i0 * task.k..(i0 + mr) * task.k];
                let row0 = task.row0 + j0;
                let mut out = |i: usize, j: usize, v: f32| task.set(i0 + i, j0 + j, v);
                match (mr, nr) {
                    (4, 4) => $tile::<_, 4, 4>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (4, 3) => $tile::<_, 4, 3>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (4, 2) => $tile::<_, 4, 2>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (4, 1) => $tile::<_, 4, 1>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (3, 4) => $tile::<_, 3, 4>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (3, 3) => $tile::<_, 3, 3>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (3, 2) => $tile::<_, 3, 2>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (3, 1) => $tile::<_, 3, 1>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (2, 4) => $tile::<_, 2, 4>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (2, 3) => $tile::<_, 2, 3>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (2, 2) => $tile::<_, 2, 2>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (2, 1) => $tile::<_, 2, 1>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (1, 4) => $tile::<_, 1, 4>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (1, 3) => $tile::<_, 1, 3>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (1, 2) => $tile::<_, 1, 2>(xs, task.k, w, row0, i0 == 0, &mut out),
                    (1, 1) => $tile::<_, 1, 1>(xs, task.k, w, row0, i0 == 0, &mut out),
                    _ => unreachable!("tiles are at most {MR} x {NR}"),
                }
            }
        }
    }};
}
use tile_dispatch;

/// For each expert `e`, `out[rows of e] = x[rows of e] @ w[e]^T` on the fast kernels of `isa`: the
/// twin of [`cpu::gemm::grouped_gemm`](super::gemm::grouped_gemm), with the same arguments and errors
/// (and [`MoeError::InvalidConfig`] when the CPU lacks `isa`). Weights no fast kernel reads
/// ([`ExpertRows::source`] `None`) run on the reference GEMM.
pub fn grouped_gemm<X: Element, Y: Element>(
    isa: Isa,
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: impl ExpertRows,
    out: &mut MatMut<'_, Y>,
) -> Result<()> {
    if w.source().is_none() {
        return super::gemm::grouped_gemm(x, offsets, w, out);
    }
    out.expect_shape("grouped GEMM output", x.rows(), w.shape()[1])?;
    grouped_gemm_rows(isa, x, offsets, &w, out, |acc, row| {
        for (o, &a) in row.iter_mut().zip(acc) {
            *o = Y::from_f32(a);
        }
    })
}

/// The up projection with the activation fused, on the fast kernels of `isa`: the twin of
/// [`cpu::gemm::grouped_gemm_activation`](super::gemm::grouped_gemm_activation), with the same
/// arguments and errors (and [`MoeError::InvalidConfig`] when the CPU lacks `isa`). Weights no
/// fast kernel reads ([`ExpertRows::source`] `None`) run on the reference GEMM.
pub fn grouped_gemm_activation<X: Element, Y: Element>(
    isa: Isa,
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: impl ExpertRows,
    act: Activation,
    out: &mut MatMut<'_, Y>,
) -> Result<()> {
    if w.source().is_none() {
        return super::gemm::grouped_gemm_activation(x, offsets, w, act, out);
    }
    let i = out.cols();
    if w.shape()[1] != act.up_rows(i) {
        return Err(MoeError::shape(
            "expert up-projection weights",
            format!("[E, {}, K] for an output of {i} columns", act.up_rows(i)),
            format!("{:?}", w.shape()),
        ));
    }
    out.expect_shape("activated output", x.rows(), i)?;
    grouped_gemm_rows(isa, x, offsets, &w, out, |acc, row| {
        silu::activate_row(isa, act, acc, row)
    })
}

/// The grouped GEMM with the epilogue left to the caller: `epilogue(acc, out_row)` turns each
/// row's `f32` accumulators (all `N` columns) into its row of `out`, once per row, in parallel over
/// the rows of a batch (each row on its own: the result does not depend on the split).
fn grouped_gemm_rows<X: Element, Y: Element>(
    isa: Isa,
    x: MatRef<'_, X>,
    offsets: &[usize],
    w: &impl ExpertRows,
    out: &mut MatMut<'_, Y>,
    epilogue: impl Fn(&[f32], &mut [Y]) + Sync,
) -> Result<()> {
    let isa = isa.check()?;
    let shape @ [experts, n, k] = w.shape();
    if k != x.cols() {
        return Err(MoeError::shape(
            "expert weights",
            format!("[E, N, {}] (K of the activations)", x.cols()),
            format!("{shape:?}"),
        ));
    }
    validate_offsets(offsets, experts, x.rows())?;
    let Some(src) = w.source() else {
        return Err(MoeError::Unsupported(
            "these expert weights have no fast kernel (the callers run the reference GEMM)".into(),
        ));
    };
    src.check(shape)?;
    let ocols = out.cols();
    if n == 0 || x.rows() == 0 || ocols == 0 {
        for r in 0..x.rows() {
            epilogue(&[], out.row_mut(r));
        }
        return Ok(());
    }
    // bf16 activations with bf16 weights go to `vdpbf16ps` (or AMX) as they are; anything else is
    // widened.
    let bf16_pairs = match (isa, src, WeightSource::plain(x.data())) {
        (Isa::Avx512Bf16 | Isa::Amx, WeightSource::Bf16(w), WeightSource::Bf16(xb)) => {
            Some((w, xb))
        }
        _ => None,
    };
    let amx_shape = isa == Isa::Amx && n % 16 == 0 && k % 32 == 0 && k > 0;
    // Row blocks (expert, first row, end) in row order, batched up to BATCH_ROWS rows. Each block
    // streams its expert's weights from memory once: AMX blocks are as large as a batch, so that an
    // expert's rows share one stream; the register tiles reread each block's activations (in f32)
    // from cache for every NR weight rows, and keep them within M_BLOCK rows.
    let m_block = if amx_shape && bf16_pairs.is_some() {
        BATCH_ROWS
    } else {
        M_BLOCK
    };
    let mut blocks = Vec::new();
    for e in 0..experts {
        for r0 in (offsets[e]..offsets[e + 1]).step_by(m_block) {
            blocks.push((e, r0, (r0 + m_block).min(offsets[e + 1])));
        }
    }
    // Buffers reused by every batch, grown and never refilled: each batch writes all it reads
    // (every accumulator of its rows, every packed word of its blocks).
    let mut xs = Vec::new();
    let mut packed = Vec::new();
    let mut acc = Vec::new();
    let mut start = 0;
    while start < blocks.len() {
        let first = blocks[start].1;
        let mut end = start + 1;
        while end < blocks.len() && blocks[end].2 - first <= BATCH_ROWS {
            end += 1;
        }
        let batch = &blocks[start..end];
        let last = batch[batch.len() - 1].2;
        let acc = grown(&mut acc, (last - first) * n);
        match bf16_pairs {
            #[cfg(target_arch = "x86_64")]
            Some((w, xb)) => {
                let (tiles, dots): (Vec<Block>, Vec<Block>) = batch
                    .iter()
                    .partition(|b| amx_shape && b.2 - b.1 >= amx::MIN_ROWS);
                if !tiles.is_empty() {
                    // Each block's activations packed into AMX B tiles, one after the other,
                    // the blocks in parallel.
                    let mut at = vec![0usize];
                    for &(_, r0, r1) in &tiles {
                        at.push(at[at.len() - 1] + amx::packed_len(r1 - r0, k));
                    }
                    let packed = grown(&mut packed, at[tiles.len()]);
                    let mut parts = Vec::with_capacity(tiles.len());
                    let mut rest = &mut packed[..];
                    for &(_, r0, r1) in &tiles {
                        let (part, tail) = rest.split_at_mut(amx::packed_len(r1 - r0, k));
                        parts.push((part, r0, r1));
                        rest = tail;
                    }
                    parts.into_par_iter().for_each(|(part, r0, r1)| {
                        amx::pack(&xb[r0 * k..r1 * k], r1 - r0, k, part)
                    });
                    let packed = &*packed;
                    let xs_of = |b: usize| &packed[at[b]..at[b + 1]];
                    // SAFETY: `isa` is `Amx`, checked available; strips are multiples of 16 rows.
                    run_batch([n, k], &tiles, first, xs_of, 16, acc, |t| unsafe {
                        amx::task(t, w)
                    });
                }
                if !dots.is_empty() {
                    let xs_of = |b: usize| &xb[dots[b].1 * k..dots[b].2 * k];
                    // SAFETY: `isa` is `Avx512Bf16` or `Amx`, checked available.
                    run_batch([n, k], &dots, first, xs_of, NR, acc, |t| unsafe {
                        avx512::task_bf16(t, w)
                    });
                }
            }
            _ => {
                xs.clear();
                for r in first..last {
                    xs.extend(x.row(r).iter().map(|v| v.to_f32()));
                }
                let xs_of = |b: usize| &xs[(batch[b].1 - first) * k..(batch[b].2 - first) * k];
                run_batch([n, k], batch, first, xs_of, NR, acc, |t| match isa {
                    Isa::Portable => portable::task(t, &src),
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: `isa` was checked available (`Isa::check`).
                    Isa::Avx2 => unsafe { portable::task_avx2(t, &src) },
                    #[cfg(target_arch = "x86_64")]
                    // SAFETY: as above (`Avx512Bf16` and `Amx` include `Avx512`).
                    Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => unsafe { avx512::task(t, &src) },
                    #[cfg(not(target_arch = "x86_64"))]
                    Isa::Avx2 | Isa::Avx512 | Isa::Avx512Bf16 | Isa::Amx => {
                        unreachable!("checked available")
                    }
                })
            }
        }
        let rows_out = &mut out.data_mut()[first * ocols..last * ocols];
        if (last - first) * n < TASK_GRAIN {
            for (a, o) in acc.chunks_exact(n).zip(rows_out.chunks_exact_mut(ocols)) {
                epilogue(a, o);
            }
        } else {
            acc.par_chunks_exact(n)
                .zip(rows_out.par_chunks_exact_mut(ocols))
                .for_each(|(a, o)| epilogue(a, o));
        }
        start = end;
    }
    Ok(())
}

/// `len` elements of `buf` from its first cache-line boundary (an AMX tile row of 64 bytes that
/// straddles two lines makes its tile load slower: perf/NOTES.md, "Step 8"), `buf` grown with
/// zeros when too short (and never shrunk, nor refilled: the caller overwrites what it reads).
fn grown<T: Copy + Default>(buf: &mut Vec<T>, len: usize) -> &mut [T] {
    let size = std::mem::size_of::<T>();
    debug_assert!(CACHE_LINE.is_multiple_of(size));
    if buf.len() < len + CACHE_LINE / size {
        buf.resize(len + CACHE_LINE / size, T::default());
    }
    // Elements from the start to the boundary (the allocation is aligned to `size`).
    let off = (CACHE_LINE - buf.as_ptr() as usize % CACHE_LINE) % CACHE_LINE / size;
    &mut buf[off..off + len]
}

/// A row block: (expert, first row, end row).
type Block = (usize, usize, usize);

/// The accumulators `acc` `[rows, N]` of a batch whose first row is `first`, for its row `blocks`
/// (each with its activations `xs_of(b)`), by parallel tasks run by `run`, each on a strip of a
/// multiple of `strip` weight rows.
fn run_batch<'x, A: Sync + 'x>(
    [n, k]: [usize; 2],
    blocks: &[Block],
    first: usize,
    xs_of: impl Fn(usize) -> &'x [A],
    strip: usize,
    acc: &mut [f32],
    run: impl Fn(&Task<'_, A>) + Sync,
) {
    let rows: usize = blocks.iter().map(|b| b.2 - b.1).sum();
    // Strips of weight rows: enough tasks to keep every thread busy (four per thread), each of at
    // least TASK_GRAIN multiply-adds where the batch allows, in whole register tiles.
    let threads = rayon::current_num_threads();
    let per_block = (4 * threads).div_ceil(blocks.len());
    let nb = n.div_ceil(per_block).next_multiple_of(strip);
    let grain_rows = TASK_GRAIN
        .div_ceil(((rows / blocks.len()) * k).max(1))
        .next_multiple_of(strip);
    let nb = nb.max(grain_rows).min(n);
    let out = OutPtr(acc.as_mut_ptr());
    let tasks: Vec<Task<'_, A>> = blocks
        .iter()
        .enumerate()
        .flat_map(|(b, &(e, r0, r1))| {
            let xs = xs_of(b);
            (0..n).step_by(nb).map(move |n0| Task {
                xs,
                m: r1 - r0,
                k,
                row0: e * n + n0,
                nb: nb.min(n - n0),
                // Row `r0 - first`, column `n0` of `acc` (in bounds: `acc` holds the batch's rows
                // from `first`, `n0 < n`).
                out: OutPtr(out.0.wrapping_add((r0 - first) * n + n0)),
                ostride: n,
            })
        })
        .collect();
    if tasks.len() == 1 {
        run(&tasks[0]);
    } else {
        tasks.par_iter().for_each(&run);
    }
}
