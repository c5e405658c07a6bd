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

/// The tile configuration: palette 1, all eight tiles 16 rows of 64 bytes (the one-group loop uses
/// tile 0 as the accumulator, 1 for the weights, 2 for the activations; the four-group loop tiles
/// 0-3 as accumulators, 4 for the weights, 5-7 for the activations).
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

/// One task: `task.xs` is the row block's packed activations ([`pack`]), `w` the bf16 weights
/// `[E, N, K]`; `task.nb` is a multiple of 16 and `K` of 32.
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
    let mut c = [[0f32; TILE]; TILE];
    // SAFETY: AMX is available and permitted (caller); the configuration is valid for palette 1.
    unsafe { asm!("ldtilecfg [{}]", in(reg) cfg.0.as_ptr(), options(nostack, readonly)) };
    for n0 in (0..task.nb).step_by(TILE) {
        let a0 = w[(task.row0 + n0) * k..].as_ptr();
        let mut groups = task.xs.chunks_exact(group_words).enumerate();
        // Four groups of 16 rows at a time share each weight tile load.
        while groups.len() >= 4 {
            let (g, b0) = groups.next().expect("four groups left");
            let [b1, b2, b3] = [(); 3].map(|()| groups.next().expect("four groups left").1);
            let mut c4 = [[[0f32; TILE]; TILE]; 4];
            // SAFETY: as in the one-group loop below, for four groups of packed activations;
            // the stores write 4 x 1 KB into `c4`.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "tilezero tmm1",
                    "tilezero tmm2",
                    "tilezero tmm3",
                    "2:",
                    "tileloadd tmm4, [{a} + {sa}*1]",
                    "tileloadd tmm5, [{b0} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm5",
                    "tileloadd tmm6, [{b1} + {sb}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm6",
                    "tileloadd tmm7, [{b2} + {sb}*1]",
                    "tdpbf16ps tmm2, tmm4, tmm7",
                    "tileloadd tmm5, [{b3} + {sb}*1]",
                    "tdpbf16ps tmm3, tmm4, tmm5",
                    "add {a}, 64",
                    "add {b0}, 1024",
                    "add {b1}, 1024",
                    "add {b2}, 1024",
                    "add {b3}, 1024",
                    "dec {steps}",
                    "jnz 2b",
                    "tilestored [{c} + {sb}*1], tmm0",
                    "add {c}, 1024",
                    "tilestored [{c} + {sb}*1], tmm1",
                    "add {c}, 1024",
                    "tilestored [{c} + {sb}*1], tmm2",
                    "add {c}, 1024",
                    "tilestored [{c} + {sb}*1], tmm3",
                    a = inout(reg) a0 => _,
                    b0 = inout(reg) b0.as_ptr() => _,
                    b1 = inout(reg) b1.as_ptr() => _,
                    b2 = inout(reg) b2.as_ptr() => _,
                    b3 = inout(reg) b3.as_ptr() => _,
                    steps = inout(reg) k / 32 => _,
                    sa = in(reg) 2 * k,
                    sb = in(reg) 64usize,
                    c = inout(reg) c4.as_mut_ptr() => _,
                    options(nostack),
                );
            }
            for (q, c) in c4.iter().enumerate() {
                write_tile(task, g + q, n0, c);
            }
        }
        for (g, b) in groups {
            // SAFETY: the A tiles read 16 weight rows (stride 2K bytes) of 32 columns at each of
            // the K / 32 steps, inside rows `row0 + n0 .. row0 + n0 + 16` (caller); the B tiles
            // read 16 rows of 64 bytes at each step, the group's K / 2 * 16 words; the store
            // writes 16 rows of 64 bytes into `c`.
            unsafe {
                asm!(
                    "tilezero tmm0",
                    "2:",
                    "tileloadd tmm1, [{a} + {sa}*1]",
                    "tileloadd tmm2, [{b} + {sb}*1]",
                    "tdpbf16ps tmm0, tmm1, tmm2",
                    "add {a}, 64",
                    "add {b}, 1024",
                    "dec {steps}",
                    "jnz 2b",
                    "tilestored [{c} + {sb}*1], tmm0",
                    a = inout(reg) a0 => _,
                    b = inout(reg) b.as_ptr() => _,
                    steps = inout(reg) k / 32 => _,
                    sa = in(reg) 2 * k,
                    sb = in(reg) 64usize,
                    c = in(reg) c.as_mut_ptr(),
                    options(nostack),
                );
            }
            write_tile(task, g, n0, &c);
        }
    }
    // SAFETY: releases the tile state configured above.
    unsafe { asm!("tilerelease", options(nostack, nomem)) };
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
