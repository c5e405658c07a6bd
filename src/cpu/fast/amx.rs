//! The AMX build of the bf16 GEMM (x86-64 Linux with AMX-BF16): `C^T = W X^T` on 16 x 16 tiles.
//!
//! One `tdpbf16ps` adds `A (16 x 32 bf16) x B (32 x 16 bf16, as 16 rows of 16 pairs)` into a
//! 16 x 16 `f32` tile. The weights are the A tile as stored (16 weight rows, 32 columns, stride
//! `K`); the activations of a row block are packed once into B tiles ([`pack`]): for each group of
//! 16 rows, `K / 2` rows of 16 column pairs. A task then runs, for each 16 weight rows and each
//! 16 activation rows, the `K / 32` tile products into one accumulator tile, stores it and writes
//! it transposed. Every output is the same sequence of tile products whichever task computes it.
//!
//! Used for bf16 activations and weights when `N % 16 == 0`, `K % 32 == 0` and the row block has
//! at least [`MIN_ROWS`] rows; other work goes to the AVX-512 kernels.

use half::bf16;
use std::arch::asm;
use std::sync::OnceLock;

use super::Task;

/// Rows of an activation block below which the AVX-512 tiles are used (an AMX tile product
/// computes 16 rows whatever the block holds).
pub(super) const MIN_ROWS: usize = 8;

/// Whether the CPU has AMX-BF16 and the kernel lets this process use the tile registers (asked
/// once, with `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
pub(super) fn available() -> bool {
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        let leaf7 = std::arch::x86_64::__cpuid_count(7, 0);
        let (amx_bf16, amx_tile) = (leaf7.edx & (1 << 22) != 0, leaf7.edx & (1 << 24) != 0);
        amx_bf16 && amx_tile && super::Isa::Avx512Bf16.available() && request_tile_data()
    })
}

/// Ask Linux for permission to use the AMX tile data state.
#[cfg(target_os = "linux")]
fn request_tile_data() -> bool {
    const SYS_ARCH_PRCTL: i64 = 158;
    const ARCH_REQ_XCOMP_PERM: i64 = 0x1023;
    const XFEATURE_XTILEDATA: i64 = 18;
    let ret: i64;
    // SAFETY: the `arch_prctl` system call with these arguments only changes this process's
    // permitted extended state; `syscall` clobbers rcx and r11, declared here.
    unsafe {
        asm!(
            "syscall",
            inlateout("rax") SYS_ARCH_PRCTL => ret,
            in("rdi") ARCH_REQ_XCOMP_PERM,
            in("rsi") XFEATURE_XTILEDATA,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    ret == 0
}

/// Other systems: not asked, not used.
#[cfg(not(target_os = "linux"))]
fn request_tile_data() -> bool {
    false
}

/// Activation rows of one B tile, and weight rows of one A tile.
const TILE: usize = 16;

/// Words (column pairs) of packed activations for a block of `m` rows: `ceil(m / 16)` groups of
/// `K / 2 x 16`.
pub(super) fn packed_len(m: usize, k: usize) -> usize {
    m.div_ceil(TILE) * (k / 2) * TILE
}

/// Pack `m` activation rows `xs` `[m, K]` (bf16, `K` even) into B tiles `out`
/// ([`packed_len`] words): group `g`, pair `p`, row `r` is the word at `(g * K / 2 + p) * 16 + r`,
/// holding columns `2p` and `2p + 1` of row `16g + r` (zero past the last row).
pub(super) fn pack(xs: &[bf16], m: usize, k: usize, out: &mut [u32]) {
    debug_assert_eq!(out.len(), packed_len(m, k));
    let pairs = k / 2;
    for (g, group) in out.chunks_exact_mut(pairs * TILE).enumerate() {
        for r in 0..TILE {
            let row = g * TILE + r;
            if row >= m {
                for p in 0..pairs {
                    group[p * TILE + r] = 0;
                }
                continue;
            }
            let x = &xs[row * k..(row + 1) * k];
            for (p, pair) in x.chunks_exact(2).enumerate() {
                group[p * TILE + r] = pair[0].to_bits() as u32 | (pair[1].to_bits() as u32) << 16;
            }
        }
    }
}

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes (tiles 0-3 are the
/// accumulators, 4-5 the weights, 6-7 the activations; see [`block`]).
#[repr(C, align(64))]
struct TileConfig([u8; 64]);

impl TileConfig {
    fn new() -> TileConfig {
        let mut c = [0u8; 64];
        c[0] = 1;
        for t in 0..8 {
            c[16 + 2 * t..18 + 2 * t].copy_from_slice(&64u16.to_le_bytes());
            c[48 + t] = TILE as u8;
        }
        TileConfig(c)
    }
}

/// Bytes of a strip pair's weights and of its row block's packed activations that one K chunk of a
/// task reads: half the 2 MB L2 of the cores with AMX, so that both stay in the core's L2 while the
/// chunk's activation groups take their turns.
const CHUNK_BYTES: usize = 1 << 20;

/// Bytes of accumulators a panel of strip pairs keeps between K chunks (in L2 beside a chunk).
const PANEL_BYTES: usize = 256 << 10;

/// One task: `task.xs` is the row block's packed activations ([`pack`]), `w` the bf16 weights
/// `[E, N, K]`; `task.nb` is a multiple of 16 and `K` of 32. The outputs are computed in blocks of
/// up to 2 x 2 tiles (two strips of 16 weight rows against two groups of 16 activation rows), so
/// that each tile loaded serves two tile products.
///
/// K is cut into chunks whose weights (of a strip pair) and activations (of the whole block) fit
/// [`CHUNK_BYTES`], and the strip pairs into panels whose accumulators fit [`PANEL_BYTES`]. Panel
/// by panel, chunk by chunk, each strip pair of the panel runs its group pairs: its weights stream
/// from memory once and each group pair rereads them from L2, and the chunk's activations stay in
/// L2 for the whole panel. The accumulators are kept between chunks, so each is still the sum of its
/// `K / 32` tile products in K order.
///
/// # Safety
///
/// [`available`] must have returned true; `w` must hold rows `task.row0 .. task.row0 + task.nb`
/// of `K` values, and `task.xs` the packed rows of `task.m` activations.
pub(super) unsafe fn task(task: &Task<'_, u32>, w: &[bf16]) {
    let k = task.k;
    debug_assert!(task.nb.is_multiple_of(TILE) && k.is_multiple_of(32) && k > 0);
    debug_assert!((task.row0 + task.nb) * k <= w.len());
    debug_assert_eq!(task.xs.len(), packed_len(task.m, k));
    let cfg = TileConfig::new();
    let group_words = (k / 2) * TILE;
    let (strips, groups) = (task.nb / TILE, task.xs.len() / group_words);
    let group_pairs = groups.div_ceil(2);
    // Columns per chunk: 2 bytes each for the strip pair's 32 rows and the groups' rows.
    let chunk = (CHUNK_BYTES / (2 * TILE * (2 + groups)) / 32 * 32).clamp(32, k);
    // Strips per panel (an even number): 4 accumulator tiles of 1 KB per strip pair and group pair;
    // one strip pair where K is one chunk (nothing to keep between chunks).
    let panel = if chunk < k {
        2 * (PANEL_BYTES / (4096 * group_pairs)).max(1)
    } else {
        2
    };
    // The accumulators of a panel: `acc[(s - p0) / 2 * group_pairs + g / 2][2 (s % 2) + g % 2]` is
    // strip `s` against group `g`.
    let mut acc = vec![[[[0f32; TILE]; TILE]; 4]; panel / 2 * group_pairs];
    // SAFETY: AMX is available and permitted (caller); the configuration is valid for palette 1.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
    for p0 in (0..strips).step_by(panel) {
        let p1 = (p0 + panel).min(strips);
        acc.iter_mut().for_each(|c| *c = [[[0f32; TILE]; TILE]; 4]);
        for k0 in (0..k).step_by(chunk) {
            let steps = chunk.min(k - k0) / 32;
            for s0 in (p0..p1).step_by(2) {
                let two_strips = s0 + 1 < p1;
                let a = w[(task.row0 + s0 * TILE) * k + k0..].as_ptr();
                let acc = &mut acc[(s0 - p0) / 2 * group_pairs..];
                for g0 in (0..groups).step_by(2) {
                    let two_groups = g0 + 1 < groups;
                    let b = task.xs[g0 * group_words + (k0 / 2) * TILE..].as_ptr();
                    // SAFETY: the weight rows of strips `s0` (and `s0 + 1` when `two_strips`) and
                    // the packed groups `g0` (and `g0 + 1` when `two_groups`) exist (caller; the
                    // loops' bounds), and columns `k0 .. k0 + 32 * steps` are inside their K.
                    unsafe { block(two_strips, two_groups, a, b, k, steps, &mut acc[g0 / 2]) };
                }
            }
        }
        for s0 in (p0..p1).step_by(2) {
            let acc = &acc[(s0 - p0) / 2 * group_pairs..][..group_pairs];
            for (gp, c) in acc.iter().enumerate() {
                let g0 = 2 * gp;
                for s in 0..(p1 - s0).min(2) {
                    for g in 0..(groups - g0).min(2) {
                        write_tile(task, g0 + g, (s0 + s) * TILE, &c[2 * s + g]);
                    }
                }
            }
        }
    }
    // SAFETY: releases the tile state configured above.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
}

/// One block's `steps` tile products added to its accumulators: `c[2s + g]` is weight strip `s`
/// (16 rows from `a`, stride `K` bf16) against packed activation group `g` (from `b`, groups
/// `K / 2 x 16` words apart), for `s < 2` when `two_strips` (else `s = 0`) and `g < 2` when
/// `two_groups` (else `g = 0`). The accumulators are loaded from `c`, `steps` products of 32
/// columns each are added in K order, and they are stored back, whatever the block's shape.
///
/// Tiles: accumulators 0 (s0 g0), 1 (s0 g1), 2 (s1 g0), 3 (s1 g1); weights 4 (s0) and 5 (s1);
/// activations 6 (g0) and 7 (g1).
///
/// # Safety
///
/// The tile configuration of [`task`] must be loaded; `a` must point to the strips' `16 x K` (or
/// `32 x K`) weights with `32 * steps` columns from `a` inside each row, `b` to the groups' packed
/// words with `16 * steps` pairs from `b` inside each group.
#[inline(always)]
unsafe fn block(
    two_strips: bool,
    two_groups: bool,
    a: *const bf16,
    b: *const u32,
    k: usize,
    steps: usize,
    c: &mut [[[f32; TILE]; TILE]; 4],
) {
    let a1 = a.wrapping_add(TILE * k);
    let b1 = b.wrapping_add((k / 2) * TILE);
    let c = c.as_mut_ptr();
    // SAFETY (every arm): the weight tiles read 16 rows (stride 2K bytes) of 64 bytes at each of
    // the `steps` steps, inside the strips (caller); the activation tiles read 16 rows of 64 bytes
    // at each step, inside the groups (caller); the accumulators load and store 1 KB each in `c`
    // (4 KB).
    unsafe {
        match (two_strips, two_groups) {
            (true, true) => asm!(
                "tileloadd tmm0, [{c} + {sb}*1]",
                "tileloadd tmm1, [{c} + {sb}*1 + 1024]",
                "tileloadd tmm2, [{c} + {sb}*1 + 2048]",
                "tileloadd tmm3, [{c} + {sb}*1 + 3072]",
                "2:",
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {steps}",
                "jnz 2b",
                "tilestored [{c} + {sb}*1], tmm0",
                "tilestored [{c} + {sb}*1 + 1024], tmm1",
                "tilestored [{c} + {sb}*1 + 2048], tmm2",
                "tilestored [{c} + {sb}*1 + 3072], tmm3",
                a0 = inout(reg) a => _,
                a1 = inout(reg) a1 => _,
                b0 = inout(reg) b => _,
                b1 = inout(reg) b1 => _,
                steps = inout(reg) steps => _,
                sa = in(reg) 2 * k,
                sb = in(reg) 64usize,
                c = in(reg) c,
                options(nostack),
            ),
            (true, false) => asm!(
                "tileloadd tmm0, [{c} + {sb}*1]",
                "tileloadd tmm2, [{c} + {sb}*1 + 2048]",
                "2:",
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "add {a0}, 64",
                "add {a1}, 64",
                "add {b0}, 1024",
                "dec {steps}",
                "jnz 2b",
                "tilestored [{c} + {sb}*1], tmm0",
                "tilestored [{c} + {sb}*1 + 2048], tmm2",
                a0 = inout(reg) a => _,
                a1 = inout(reg) a1 => _,
                b0 = inout(reg) b => _,
                steps = inout(reg) steps => _,
                sa = in(reg) 2 * k,
                sb = in(reg) 64usize,
                c = in(reg) c,
                options(nostack),
            ),
            (false, true) => asm!(
                "tileloadd tmm0, [{c} + {sb}*1]",
                "tileloadd tmm1, [{c} + {sb}*1 + 1024]",
                "2:",
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tileloadd tmm7, [{b1} + {sb}*1]",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "add {a0}, 64",
                "add {b0}, 1024",
                "add {b1}, 1024",
                "dec {steps}",
                "jnz 2b",
                "tilestored [{c} + {sb}*1], tmm0",
                "tilestored [{c} + {sb}*1 + 1024], tmm1",
                a0 = inout(reg) a => _,
                b0 = inout(reg) b => _,
                b1 = inout(reg) b1 => _,
                steps = inout(reg) steps => _,
                sa = in(reg) 2 * k,
                sb = in(reg) 64usize,
                c = in(reg) c,
                options(nostack),
            ),
            (false, false) => asm!(
                "tileloadd tmm0, [{c} + {sb}*1]",
                "2:",
                "tileloadd tmm4, [{a0} + {sa}*1]",
                "tileloadd tmm6, [{b0} + {sb}*1]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "add {a0}, 64",
                "add {b0}, 1024",
                "dec {steps}",
                "jnz 2b",
                "tilestored [{c} + {sb}*1], tmm0",
                a0 = inout(reg) a => _,
                b0 = inout(reg) b => _,
                steps = inout(reg) steps => _,
                sa = in(reg) 2 * k,
                sb = in(reg) 64usize,
                c = in(reg) c,
                options(nostack),
            ),
        }
    }
}

/// Write accumulator tile `c` (`c[n][r]`: weight row `n0 + n` against activation row `16g + r`)
/// to the task's outputs, for the activation rows that exist.
#[inline]
fn write_tile(task: &Task<'_, u32>, g: usize, n0: usize, c: &[[f32; TILE]; TILE]) {
    for r in 0..TILE.min(task.m - g * TILE) {
        for (n, cn) in c.iter().enumerate() {
            task.set(g * TILE + r, n0 + n, cn[r]);
        }
    }
}
