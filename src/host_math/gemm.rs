//! The grouped GEMM's tile schedule and operand mapping from `kernels/gemm_schedule.cuh`, its
//! shared-memory and fragment layout from `kernels/gemm_layout.cuh`, the activation formulas of
//! `kernels/activation.cuh`, and the FP8 weight decoding of `kernels/gemm_weights.cuh`.

use crate::config::ActivationKind;

extern "C" {
    fn moe_host_gemm_n_tiles(n: i64, bn: i32, gated: i32) -> i64;
    fn moe_host_gemm_max_row_tiles(rows: i64, num_experts: i64, bm: i32) -> i64;
    fn moe_host_gemm_schedule(
        offsets: *const i64,
        num_experts: i64,
        rows: i64,
        bm: i32,
        n_tiles: i64,
        chunk: i32,
        group: i32,
        tiles: *mut i64,
        capacity: i64,
    ) -> i64;
    fn moe_host_gemm_b_row(
        s: i32,
        n_tile: i64,
        n: i64,
        bn: i32,
        wn: i32,
        gated: i32,
        w_row: *mut i64,
    ) -> i32;
    fn moe_host_gemm_out_col(v: i32, n_tile: i64, bn: i32, wn: i32, gated: i32) -> i64;
    fn moe_host_gemm_smem_offset(row: i32, chunk: i32, chunks_per_row: i32) -> i32;
    fn moe_host_gemm_a_frag_row(lane: i32) -> i32;
    fn moe_host_gemm_a_frag_chunk(lane: i32, kk: i32) -> i32;
    fn moe_host_gemm_b_frag_row(lane: i32) -> i32;
    fn moe_host_gemm_b_frag_chunk(lane: i32, kk: i32) -> i32;
    fn moe_host_gemm_b_frag_of(j: i32, pair: *mut i32, reg: *mut i32);
    fn moe_host_gemm_acc_row(lane: i32, reg: i32) -> i32;
    fn moe_host_gemm_acc_col(lane: i32, reg: i32) -> i32;
    fn moe_host_activation(kind: i32, x: f32) -> f32;
    fn moe_host_clamped_swiglu(gate: f32, up: f32, alpha: f32, limit: f32) -> f32;
    fn moe_host_e4m3_to_float(code: u32) -> f32;
    fn moe_host_e2m1_to_float(code: u32) -> f32;
    fn moe_host_e8m0_to_float(code: u32) -> f32;
}

/// One output tile of the grouped GEMM: rows `row_begin..row_end` of `expert`, column tile `n_tile`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GemmTile {
    /// The expert whose weights the tile multiplies.
    pub expert: i64,
    /// First row of the tile.
    pub row_begin: i64,
    /// One past the last row of the tile (at most `bm` rows after `row_begin`).
    pub row_end: i64,
    /// Column tile index.
    pub n_tile: i64,
}

fn to_i64(v: usize, what: &str) -> i64 {
    i64::try_from(v).unwrap_or_else(|_| panic!("{what} = {v} does not fit i64"))
}

fn to_i32(v: usize, what: &str) -> i32 {
    i32::try_from(v).unwrap_or_else(|_| panic!("{what} = {v} does not fit i32"))
}

/// Column tiles per expert: `ceil(n / bn)`, or `ceil((n / 2) / (bn / 2))` for the gated epilogue.
pub fn n_tiles(n: usize, bn: usize, gated: bool) -> u64 {
    // SAFETY: a pure function of its scalar arguments.
    let t = unsafe { moe_host_gemm_n_tiles(to_i64(n, "n"), to_i32(bn, "bn"), i32::from(gated)) };
    t as u64
}

/// The kernels' upper bound of the row tiles over all experts, for any offsets content.
pub fn max_row_tiles(rows: usize, num_experts: usize, bm: usize) -> u64 {
    // SAFETY: a pure function of its scalar arguments.
    let t = unsafe {
        moe_host_gemm_max_row_tiles(
            to_i64(rows, "rows"),
            to_i64(num_experts, "num_experts"),
            to_i32(bm, "bm"),
        )
    };
    t as u64
}

/// Every tile the kernel computes, in tile-number order, as its blocks derive them from `offsets`
/// (`None`: one segment of all rows), walking the experts in chunks of `chunk` with raster groups of
/// `group` row tiles.
pub fn schedule(
    offsets: Option<&[i64]>,
    num_experts: usize,
    rows: usize,
    bm: usize,
    n_tiles: u64,
    chunk: usize,
    group: usize,
) -> Vec<GemmTile> {
    if let Some(o) = offsets {
        assert_eq!(
            o.len(),
            num_experts + 1,
            "offsets must be [num_experts + 1]"
        );
    }
    assert!(
        bm > 0 && chunk > 0 && group > 0,
        "bm, chunk and group must be positive"
    );
    let offsets_ptr = offsets.map_or(std::ptr::null(), <[i64]>::as_ptr);
    let call = |tiles: &mut [i64]| {
        // SAFETY: `offsets_ptr` is null or points at num_experts + 1 values (checked above); the
        // callee writes at most `tiles.len() / 4` tiles of 4 values into `tiles`.
        unsafe {
            moe_host_gemm_schedule(
                offsets_ptr,
                to_i64(num_experts, "num_experts"),
                to_i64(rows, "rows"),
                to_i32(bm, "bm"),
                n_tiles as i64,
                to_i32(chunk, "chunk"),
                to_i32(group, "group"),
                tiles.as_mut_ptr(),
                (tiles.len() / 4) as i64,
            )
        }
    };
    let total = call(&mut []) as usize;
    let mut flat = vec![0i64; total * 4];
    call(&mut flat);
    flat.chunks_exact(4)
        .map(|t| GemmTile {
            expert: t[0],
            row_begin: t[1],
            row_end: t[2],
            n_tile: t[3],
        })
        .collect()
}

/// The weight row loaded into B-tile row `s` of column tile `n_tile` (tiles of `bn` rows, `wn` per
/// warp), or `None` when that tile row is zero-filled.
pub fn b_row(s: usize, n_tile: u64, n: usize, bn: usize, wn: usize, gated: bool) -> Option<u64> {
    let mut row = -1i64;
    // SAFETY: scalar arguments and one valid out-pointer to an i64.
    let valid = unsafe {
        moe_host_gemm_b_row(
            to_i32(s, "s"),
            n_tile as i64,
            to_i64(n, "n"),
            to_i32(bn, "bn"),
            to_i32(wn, "wn"),
            i32::from(gated),
            &mut row,
        )
    };
    (valid != 0).then_some(row as u64)
}

/// The output column of tile column `v` of column tile `n_tile` (for the gated epilogue, `v` is in
/// the gate half of its warp's slice).
pub fn out_col(v: usize, n_tile: u64, bn: usize, wn: usize, gated: bool) -> u64 {
    // SAFETY: a pure function of its scalar arguments.
    let c = unsafe {
        moe_host_gemm_out_col(
            to_i32(v, "v"),
            n_tile as i64,
            to_i32(bn, "bn"),
            to_i32(wn, "wn"),
            i32::from(gated),
        )
    };
    c as u64
}

/// Byte offset of logical 16-byte chunk `chunk` of row `row` in a shared-memory tile with
/// `chunks_per_row` chunks per row (swizzled).
pub fn smem_offset(row: usize, chunk: usize, chunks_per_row: usize) -> usize {
    // SAFETY: a pure function of its scalar arguments.
    let off = unsafe {
        moe_host_gemm_smem_offset(
            to_i32(row, "row"),
            to_i32(chunk, "chunk"),
            to_i32(chunks_per_row, "chunks_per_row"),
        )
    };
    off as usize
}

/// How the kernels map lanes and registers to fragment coordinates (`kernels/gemm_layout.cuh`).
#[derive(Clone, Copy, Debug)]
pub struct Fragments;

impl Fragments {
    /// Row of an m16 A fragment whose address lane `lane` gives to ldmatrix.x4.
    pub fn a_row(lane: usize) -> usize {
        // SAFETY: a pure function of its scalar arguments.
        unsafe { moe_host_gemm_a_frag_row(to_i32(lane, "lane")) as usize }
    }

    /// K chunk (within the K tile) lane `lane` addresses for A at 16-deep K step `kk`.
    pub fn a_chunk(lane: usize, kk: usize) -> usize {
        // SAFETY: a pure function of its scalar arguments.
        unsafe { moe_host_gemm_a_frag_chunk(to_i32(lane, "lane"), to_i32(kk, "kk")) as usize }
    }

    /// Row of a pair of n8 B fragments whose address lane `lane` gives to ldmatrix.x4.
    pub fn b_row(lane: usize) -> usize {
        // SAFETY: a pure function of its scalar arguments.
        unsafe { moe_host_gemm_b_frag_row(to_i32(lane, "lane")) as usize }
    }

    /// K chunk lane `lane` addresses for B at 16-deep K step `kk`.
    pub fn b_chunk(lane: usize, kk: usize) -> usize {
        // SAFETY: a pure function of its scalar arguments.
        unsafe { moe_host_gemm_b_frag_chunk(to_i32(lane, "lane"), to_i32(kk, "kk")) as usize }
    }

    /// (n8 fragment of the pair, B register) that register `j` of a B ldmatrix.x4 is stored to.
    pub fn b_register(j: usize) -> (usize, usize) {
        let (mut pair, mut reg) = (-1i32, -1i32);
        // SAFETY: scalar argument and two valid out-pointers to i32.
        unsafe { moe_host_gemm_b_frag_of(to_i32(j, "j"), &mut pair, &mut reg) };
        (pair as usize, reg as usize)
    }

    /// (row, column) of accumulator register `reg` of lane `lane` in an m16n8 fragment.
    pub fn acc(lane: usize, reg: usize) -> (usize, usize) {
        let (lane, reg) = (to_i32(lane, "lane"), to_i32(reg, "reg"));
        // SAFETY: pure functions of their scalar arguments.
        unsafe {
            (
                moe_host_gemm_acc_row(lane, reg) as usize,
                moe_host_gemm_acc_col(lane, reg) as usize,
            )
        }
    }
}

/// The nonlinearity as the kernels compute it (`kernels/activation.cuh`).
///
/// Panics for [`ActivationKind::ClampedSilu`], whose parameters this does not take: see
/// [`clamped_swiglu`].
pub fn activation(kind: ActivationKind, x: f32) -> f32 {
    assert!(
        !matches!(kind, ActivationKind::ClampedSilu { .. }),
        "the clamped SwiGLU is checked with host_math::clamped_swiglu"
    );
    let kind = crate::gpu::gemm::activation_abi(kind);
    // SAFETY: a pure function of its scalar arguments.
    unsafe { moe_host_activation(kind, x) }
}

/// gpt-oss's clamped SwiGLU on one (gate, up) pair as the kernels compute it
/// (`kernels/activation.cuh`): the twin of [`ActivationKind::gated`] for
/// [`ActivationKind::ClampedSilu`].
pub fn clamped_swiglu(gate: f32, up: f32, alpha: f32, limit: f32) -> f32 {
    // SAFETY: a pure function of its scalar arguments.
    unsafe { moe_host_clamped_swiglu(gate, up, alpha, limit) }
}

/// The value of an FP8 e4m3 code as the FP8 GEMM kernels decode it (`kernels/gemm_weights.cuh`).
pub fn e4m3_to_f32(code: u8) -> f32 {
    // SAFETY: a pure function of its scalar argument.
    unsafe { moe_host_e4m3_to_float(u32::from(code)) }
}

/// The value of an FP4 e2m1 code (the low 4 bits of `code`) as the MXFP4 GEMM kernels decode it
/// (`kernels/gemm_weights.cuh`).
pub fn e2m1_to_f32(code: u8) -> f32 {
    // SAFETY: a pure function of its scalar argument.
    unsafe { moe_host_e2m1_to_float(u32::from(code)) }
}

/// The value of an e8m0 scale byte as the MXFP4 GEMM kernels decode it
/// (`kernels/gemm_weights.cuh`).
pub fn e8m0_to_f32(code: u8) -> f32 {
    // SAFETY: a pure function of its scalar argument.
    unsafe { moe_host_e8m0_to_float(u32::from(code)) }
}
