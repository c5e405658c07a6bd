//! The grouped GEMM's device-side decision logic (kernels/gemm_schedule.cuh, kernels/activation.cuh),
//! compiled for the host, against independent definitions: the tile schedule covers every row of every
//! expert exactly once and stays in bounds for any offsets, the gated B-tile layout pairs every gate
//! column with its up column in the same accumulator slot, the shared-memory swizzle is a conflict-free
//! permutation, and the activations match `ActivationKind::apply`. Runs on every machine.

mod common;

use moe_kernels::host_math::{self, Fragments, GemmTile};
use moe_kernels::ActivationKind;
use rand::rngs::StdRng;
use rand::Rng;

/// (rows per tile, weight rows per tile, weight rows per warp) of the kernels' tiles: small, medium
/// (also generic), large.
const TILES: [(usize, usize, usize); 3] = [(16, 64, 16), (64, 128, 64), (128, 128, 32)];
/// Threads per block of those tiles: the expert chunk of the schedule.
const CHUNKS: [usize; 2] = [128, 256];
/// The kernel's raster group.
const GROUP: usize = 8;

/// Random per-expert row counts: some experts empty, sometimes one hot expert with all the rows.
fn random_counts(rng: &mut StdRng, e: usize, max: usize) -> Vec<usize> {
    let mut counts: Vec<usize> = (0..e)
        .map(|_| {
            if rng.random_bool(0.3) {
                0
            } else {
                rng.random_range(0..=max)
            }
        })
        .collect();
    match rng.random_range(0..4) {
        0 => {
            counts.iter_mut().for_each(|c| *c = 0);
            let hot = rng.random_range(0..e);
            counts[hot] = rng.random_range(1..=max * 8 + 1);
        }
        1 => counts.iter_mut().for_each(|c| *c = 0),
        _ => {}
    }
    counts
}

fn offsets_of(counts: &[usize]) -> Vec<i64> {
    let mut offsets = vec![0i64];
    for &c in counts {
        offsets.push(offsets.last().unwrap() + c as i64);
    }
    offsets
}

/// Check that `tiles` cover, for every column tile, each row of each expert's segment exactly once,
/// with tiles that start at the segment start plus a multiple of `bm`, and nothing else.
fn check_exact_cover(
    what: &str,
    tiles: &[GemmTile],
    segments: &[(i64, i64)],
    rows: usize,
    bm: usize,
    n_tiles: u64,
) {
    let mut hits = vec![0u8; rows * n_tiles as usize];
    for t in tiles {
        let e = t.expert as usize;
        assert!(
            e < segments.len(),
            "{what}: tile {t:?} names a missing expert"
        );
        let (begin, end) = segments[e];
        assert!(
            begin <= t.row_begin && t.row_begin < t.row_end && t.row_end <= end,
            "{what}: tile {t:?} is not a non-empty part of segment {begin}..{end}"
        );
        assert!(
            t.row_end - t.row_begin <= bm as i64,
            "{what}: tile {t:?} too tall"
        );
        assert_eq!(
            (t.row_begin - begin) % bm as i64,
            0,
            "{what}: tile {t:?} not on the segment's tile grid"
        );
        assert!(
            t.row_end == end || t.row_end - t.row_begin == bm as i64,
            "{what}: tile {t:?} is short but not the segment's last"
        );
        assert!(
            (t.n_tile as u64) < n_tiles,
            "{what}: tile {t:?} column tile"
        );
        for r in t.row_begin..t.row_end {
            hits[r as usize * n_tiles as usize + t.n_tile as usize] += 1;
        }
    }
    for (e, &(begin, end)) in segments.iter().enumerate() {
        for r in begin..end {
            for n in 0..n_tiles as usize {
                assert_eq!(
                    hits[r as usize * n_tiles as usize + n],
                    1,
                    "{what}: row {r} of expert {e}, column tile {n}"
                );
            }
        }
    }
    let covered: usize = segments.iter().map(|&(b, e)| (e - b) as usize).sum();
    assert_eq!(
        hits.iter().map(|&h| h as usize).sum::<usize>(),
        covered * n_tiles as usize,
        "{what}: rows outside every segment were covered"
    );
}

/// The segments the kernel must use, from the documented rule: the running maximum of the offsets
/// clamped into [0, rows].
fn documented_segments(offsets: &[i64], rows: usize) -> Vec<(i64, i64)> {
    let clamp = |o: i64| o.clamp(0, rows as i64);
    let mut m = clamp(offsets[0]);
    offsets[1..]
        .iter()
        .map(|&o| {
            let begin = m;
            m = m.max(clamp(o));
            (begin, m)
        })
        .collect()
}

#[test]
fn schedule_covers_every_row_of_every_expert_once() {
    let mut rng = common::rng("schedule_covers_every_row_of_every_expert_once");
    for case in 0..300 {
        let e = [1usize, 2, 8, 60, 128, 129, 256, 257, 1000, 1024][case % 10];
        let max = [3usize, 17, 40, 300][rng.random_range(0..4)];
        let counts = random_counts(&mut rng, e, max);
        let offsets = offsets_of(&counts);
        let rows = *offsets.last().unwrap() as usize;
        let (bm, bn, _) = TILES[rng.random_range(0..TILES.len())];
        let n = rng.random_range(1..3 * bn);
        let gated = rng.random_bool(0.5) && n % 2 == 0;
        let n_tiles = host_math::n_tiles(n, bn, gated);
        let chunk = CHUNKS[rng.random_range(0..CHUNKS.len())];
        let tiles = host_math::schedule(Some(&offsets), e, rows, bm, n_tiles, chunk, GROUP);
        let what = format!("case {case}: E {e}, rows {rows}, bm {bm}, n {n}, chunk {chunk}");
        let segments: Vec<(i64, i64)> = offsets.windows(2).map(|w| (w[0], w[1])).collect();
        check_exact_cover(&what, &tiles, &segments, rows, bm, n_tiles);
        // Exactly the tiles the segments need, within the bound the launcher sizes the grid by.
        let needed: u64 = counts.iter().map(|&c| c.div_ceil(bm) as u64).sum::<u64>() * n_tiles;
        assert_eq!(tiles.len() as u64, needed, "{what}: tile count");
        assert!(
            needed <= host_math::max_row_tiles(rows, e, bm) * n_tiles,
            "{what}: bound"
        );
        // Tiles are numbered expert by expert (the order blocks walk them in).
        assert!(
            tiles.windows(2).all(|w| w[0].expert <= w[1].expert),
            "{what}: tile order"
        );
    }
}

#[test]
fn schedule_without_offsets_is_one_segment() {
    for rows in [1usize, 15, 16, 17, 1000, 16384 + 3] {
        for &(bm, bn, _) in &TILES {
            let n_tiles = host_math::n_tiles(7168, bn, false);
            let tiles = host_math::schedule(None, 1, rows, bm, n_tiles, 128, GROUP);
            check_exact_cover(
                &format!("rows {rows}, bm {bm}"),
                &tiles,
                &[(0, rows as i64)],
                rows,
                bm,
                n_tiles,
            );
        }
    }
}

#[test]
fn raster_groups_row_tiles_within_an_expert() {
    // One expert with 20 row tiles and 3 column tiles: groups of 8, 8 and 4 row tiles, row tile
    // fastest within a group.
    let bm = 16;
    let offsets = [0i64, 20 * 16];
    let tiles = host_math::schedule(Some(&offsets), 1, 320, bm, 3, 128, GROUP);
    let order: Vec<(i64, i64)> = tiles
        .iter()
        .map(|t| (t.row_begin / bm as i64, t.n_tile))
        .collect();
    let mut want = Vec::new();
    for (first, height) in [(0i64, 8i64), (8, 8), (16, 4)] {
        for n in 0..3 {
            for m in first..first + height {
                want.push((m, n));
            }
        }
    }
    assert_eq!(order, want);
}

#[test]
fn garbage_offsets_stay_in_bounds_and_disjoint() {
    let mut rng = common::rng("garbage_offsets_stay_in_bounds_and_disjoint");
    let specials = [i64::MIN, i64::MAX, -1, 0, 1, i64::MAX - 1];
    for case in 0..300 {
        let e = [1usize, 3, 8, 60, 130, 300, 1024][case % 7];
        let rows = rng.random_range(1..3000usize);
        let offsets: Vec<i64> = (0..=e)
            .map(|_| match rng.random_range(0..4) {
                0 => specials[rng.random_range(0..specials.len())],
                1 => rng.random_range(-5000..5000),
                _ => rng.random_range(0..=rows as i64 + 10),
            })
            .collect();
        let (bm, bn, _) = TILES[case % TILES.len()];
        let n_tiles = host_math::n_tiles(rng.random_range(1..500), bn, false);
        let chunk = CHUNKS[case % CHUNKS.len()];
        let tiles = host_math::schedule(Some(&offsets), e, rows, bm, n_tiles, chunk, GROUP);
        let what = format!("case {case}: E {e}, rows {rows}, offsets {offsets:?}");
        // The documented segments, covered exactly: in particular every tile is inside [0, rows] and
        // no output element is written twice.
        let segments = documented_segments(&offsets, rows);
        check_exact_cover(&what, &tiles, &segments, rows, bm, n_tiles);
        assert!(
            tiles.len() as u64 <= host_math::max_row_tiles(rows, e, bm) * n_tiles,
            "{what}: more tiles than the grid bound"
        );
    }
}

#[test]
fn tile_bound_is_tight_for_one_row_per_expert() {
    // rows experts of one row each need exactly rows row tiles; the bound allows ceil(rows/bm) more.
    for (rows, bm) in [(8usize, 16usize), (256, 16), (300, 128)] {
        let offsets: Vec<i64> = (0..=rows as i64).collect();
        let tiles = host_math::schedule(Some(&offsets), rows, rows, bm, 1, 128, GROUP);
        assert_eq!(tiles.len(), rows);
        assert_eq!(
            host_math::max_row_tiles(rows, rows, bm),
            (rows + rows.div_ceil(bm)) as u64
        );
    }
    assert_eq!(host_math::max_row_tiles(10, 1000, 16), 11);
}

#[test]
fn column_tiles_count_output_columns() {
    assert_eq!(host_math::n_tiles(128, 128, false), 1);
    assert_eq!(host_math::n_tiles(129, 128, false), 2);
    // Gated: a 128-row tile holds 64 gate and 64 up rows, i.e. 64 output columns.
    assert_eq!(host_math::n_tiles(128, 128, true), 1);
    assert_eq!(host_math::n_tiles(130, 128, true), 2);
    assert_eq!(host_math::n_tiles(2 * 14336, 64, true), 14336 / 32);
}

#[test]
fn gated_b_tiles_pair_gate_and_up_rows_in_the_same_slot() {
    let mut rng = common::rng("gated_b_tiles_pair_gate_and_up_rows_in_the_same_slot");
    for case in 0..200 {
        let (_, bn, wn) = TILES[case % TILES.len()];
        let half = wn / 2;
        let n = 2 * rng.random_range(1..3 * bn);
        let i = n / 2;
        let n_tiles = host_math::n_tiles(n, bn, true);
        let mut produced = vec![0u32; i];
        for tile in 0..n_tiles {
            for s in 0..bn {
                let slot = s % wn;
                let gate_v = if slot < half { s } else { s - half };
                let c = host_math::out_col(gate_v, tile, bn, wn, true);
                let row = host_math::b_row(s, tile, n, bn, wn, true);
                if (c as usize) < i {
                    // Gate rows first in each warp's slice, then the up rows of the same columns.
                    let want = if slot < half { c } else { i as u64 + c };
                    assert_eq!(row, Some(want), "n {n}, tile {tile}, tile row {s}");
                    if slot < half {
                        produced[c as usize] += 1;
                    }
                } else {
                    assert_eq!(row, None, "n {n}, tile {tile}, tile row {s}: past n/2");
                }
            }
            // The epilogue stores column pairs (v, v + 1) of one n8 fragment as adjacent columns.
            for v in (0..bn).filter(|v| v % wn < half && v % 2 == 0) {
                assert_eq!(
                    host_math::out_col(v + 1, tile, bn, wn, true),
                    host_math::out_col(v, tile, bn, wn, true) + 1
                );
            }
        }
        assert!(
            produced.iter().all(|&p| p == 1),
            "n {n}: every output column once"
        );
    }
}

#[test]
fn plain_b_tiles_are_consecutive_weight_rows() {
    for &(_, bn, wn) in &TILES {
        for n in [1usize, bn - 1, bn, bn + 1, 3 * bn + 5] {
            for tile in 0..host_math::n_tiles(n, bn, false) {
                for s in 0..bn {
                    let row = tile as usize * bn + s;
                    let want = (row < n).then_some(row as u64);
                    assert_eq!(host_math::b_row(s, tile, n, bn, wn, false), want);
                    assert_eq!(host_math::out_col(s, tile, bn, wn, false), row as u64);
                }
            }
        }
    }
}

/// The 16-byte bank group (of 8 per 128 bytes) of chunk `chunk` in row `row`.
fn bank_group(row: usize, chunk: usize, cpr: usize) -> usize {
    host_math::smem_offset(row, chunk, cpr) / 16 % 8
}

#[test]
fn shared_tile_layout_is_a_conflict_free_permutation() {
    for cpr in [2usize, 4, 8] {
        let row_bytes = cpr * 16;
        for row in 0..64 {
            let mut slots: Vec<usize> = (0..cpr)
                .map(|c| host_math::smem_offset(row, c, cpr))
                .collect();
            slots.sort_unstable();
            let want: Vec<usize> = (0..cpr).map(|c| row * row_bytes + 16 * c).collect();
            assert_eq!(slots, want, "row {row}: a permutation of the row's chunks");
            for c in 0..cpr {
                // The key repeats every 8 rows: the loader places a thread's chunk j at its chunk 0
                // plus j row steps (multiples of 8 rows).
                assert_eq!(
                    host_math::smem_offset(row + 8, c, cpr),
                    host_math::smem_offset(row, c, cpr) + 8 * row_bytes
                );
            }
        }
        // ldmatrix phase: 8 consecutive rows, one logical chunk.
        for first in 0..64 {
            for c in 0..cpr {
                let mut groups: Vec<usize> =
                    (first..first + 8).map(|r| bank_group(r, c, cpr)).collect();
                groups.sort_unstable();
                groups.dedup();
                assert_eq!(groups.len(), 8, "cpr {cpr}, rows {first}.., chunk {c}");
            }
        }
        // cp.async phase: 8 consecutive chunks in row-major order (8 threads of a warp).
        for first in (0..64 * cpr).step_by(8) {
            let mut groups: Vec<usize> = (first..first + 8)
                .map(|i| bank_group(i / cpr, i % cpr, cpr))
                .collect();
            groups.sort_unstable();
            groups.dedup();
            assert_eq!(groups.len(), 8, "cpr {cpr}, chunks {first}..");
        }
    }
}

/// A kernel block shape: (BM, BN, BK, WARPS_M, WARPS_N) of the small, medium and large tiles.
const BLOCKS: [(usize, usize, usize, usize, usize); 3] = [
    (16, 64, 64, 1, 4),
    (64, 128, 32, 2, 2),
    (128, 128, 32, 2, 4),
];

/// Registers of one warp: [lane][register][element], two 16-bit elements per register.
type Regs<const R: usize> = [[[f32; 2]; R]; 32];

/// Model of `ldmatrix.sync.aligned.m8n8.x4.shared.b16` (PTX ISA): lanes 8i..8i+7 give the 16-byte row
/// addresses of 8x8 matrix i; lane l receives in register i the elements 2 (l % 4) and 2 (l % 4) + 1
/// of row l / 4 of matrix i. `smem` holds one value per 16-bit element.
fn ldmatrix_x4(smem: &[f32], address: impl Fn(usize) -> usize) -> Regs<4> {
    let mut r = [[[0.0; 2]; 4]; 32];
    for (lane, regs) in r.iter_mut().enumerate() {
        for (i, reg) in regs.iter_mut().enumerate() {
            let row_address = address(8 * i + lane / 4);
            assert_eq!(row_address % 16, 0, "ldmatrix rows are 16-byte aligned");
            let e = row_address / 2 + 2 * (lane % 4);
            *reg = [smem[e], smem[e + 1]];
        }
    }
    r
}

/// Model of `mma.sync.aligned.m16n8k16.row.col.f32` with 16-bit inputs (PTX ISA fragment layouts,
/// g = lane / 4, t = lane % 4): A register r holds row g + 8 (r % 2), columns 2t + 8 (r / 2) + {0, 1};
/// B register r holds column g, rows 2t + 8 r + {0, 1}; accumulator register r holds row
/// g + 8 (r / 2), column 2t + r % 2.
fn mma(acc: &mut [[f32; 4]; 32], a: &Regs<4>, b: &Regs<2>) {
    let a_at = |row: usize, k: usize| a[(row % 8) * 4 + (k % 8) / 2][row / 8 + 2 * (k / 8)][k % 2];
    let b_at = |k: usize, col: usize| b[col * 4 + (k % 8) / 2][k / 8][k % 2];
    for (lane, regs) in acc.iter_mut().enumerate() {
        for (r, d) in regs.iter_mut().enumerate() {
            let (row, col) = (lane / 4 + 8 * (r / 2), 2 * (lane % 4) + r % 2);
            *d += (0..16).map(|k| a_at(row, k) * b_at(k, col)).sum::<f32>();
        }
    }
}

/// Fill a shared tile of `rows` rows the way the kernel's loader does: chunk c is tile row c / cpr,
/// K chunk c % cpr, stored at moe_gemm_smem_offset; values past K (or of missing rows) are zero.
fn load_tile(
    rows: usize,
    bk: usize,
    k0: usize,
    k: usize,
    value: impl Fn(usize, usize) -> Option<f32>,
) -> Vec<f32> {
    let cpr = bk / 8;
    let mut smem = vec![f32::NAN; rows * bk];
    for c in 0..rows * cpr {
        let (row, chunk) = (c / cpr, c % cpr);
        let base = host_math::smem_offset(row, chunk, cpr) / 2;
        for e in 0..8 {
            let col = k0 + chunk * 8 + e;
            smem[base + e] = if col < k {
                value(row, col).unwrap_or(0.0)
            } else {
                0.0
            };
        }
    }
    assert!(
        smem.iter().all(|v| !v.is_nan()),
        "every shared element written"
    );
    smem
}

/// One block tile of the kernel, emulated warp by warp with the kernel's layout functions
/// (gemm_layout.cuh, gemm_schedule.cuh) and the PTX models above: activation rows `x` (`bm` x `k`,
/// missing rows after `valid_rows`), weights `w` (`n` x `k`), column tile `n_tile`. Returns every
/// (tile row, output column, accumulator(s)) the epilogue would write, with the gated pairing.
#[allow(clippy::too_many_arguments)]
fn emulate_block(
    block: (usize, usize, usize, usize, usize),
    x: &[f32],
    valid_rows: usize,
    w: &[f32],
    n: usize,
    k: usize,
    n_tile: u64,
    gated: bool,
) -> Vec<(usize, u64, f32, f32)> {
    let (bm, bn, bk, warps_m, warps_n) = block;
    let (wm, wn) = (bm / warps_m, bn / warps_n);
    let (mt_count, nt_count) = (wm / 16, wn / 8);
    let cpr = bk / 8;
    let warps = warps_m * warps_n;
    let mut acc = vec![vec![[[0f32; 4]; 32]; mt_count * nt_count]; warps];
    for k0 in (0..k).step_by(bk) {
        let a_s = load_tile(bm, bk, k0, k, |r, c| (r < valid_rows).then(|| x[r * k + c]));
        let b_s = load_tile(bn, bk, k0, k, |s, c| {
            host_math::b_row(s, n_tile, n, bn, wn, gated).map(|row| w[row as usize * k + c])
        });
        for (warp, warp_acc) in acc.iter_mut().enumerate() {
            let (warp_m, warp_n) = (warp / warps_n, warp % warps_n);
            for kk in 0..bk / 16 {
                // As the kernel: one swizzled address per lane and K step, the fragments 16 rows
                // apart at constant offsets.
                let fragment_bytes = 16 * bk * 2;
                let a: Vec<Regs<4>> = (0..mt_count)
                    .map(|mt| {
                        ldmatrix_x4(&a_s, |lane| {
                            let row = warp_m * wm + Fragments::a_row(lane);
                            host_math::smem_offset(row, Fragments::a_chunk(lane, kk), cpr)
                                + mt * fragment_bytes
                        })
                    })
                    .collect();
                let mut b = vec![[[[0f32; 2]; 2]; 32]; nt_count];
                for np in 0..nt_count / 2 {
                    let r = ldmatrix_x4(&b_s, |lane| {
                        let row = warp_n * wn + Fragments::b_row(lane);
                        host_math::smem_offset(row, Fragments::b_chunk(lane, kk), cpr)
                            + np * fragment_bytes
                    });
                    for (lane, regs) in r.iter().enumerate() {
                        for (j, &value) in regs.iter().enumerate() {
                            let (pair, reg) = Fragments::b_register(j);
                            b[2 * np + pair][lane][reg] = value;
                        }
                    }
                }
                for mt in 0..mt_count {
                    for nt in 0..nt_count {
                        mma(&mut warp_acc[mt * nt_count + nt], &a[mt], &b[nt]);
                    }
                }
            }
        }
    }
    // The epilogue's walk (gemm_epilogue.cuh): register pairs (2h, 2h + 1) are columns v, v + 1.
    let out_cols = if gated { n / 2 } else { n } as u64;
    let mut written = Vec::new();
    for (warp, warp_acc) in acc.iter().enumerate() {
        let (warp_m, warp_n) = (warp / warps_n, warp % warps_n);
        let fragments = if gated { nt_count / 2 } else { nt_count };
        for mt in 0..mt_count {
            for nt in 0..fragments {
                let frag = &warp_acc[mt * nt_count + nt];
                let up_frag = &warp_acc[mt * nt_count + (nt + nt_count / 2) % nt_count];
                for (lane, regs) in frag.iter().enumerate() {
                    for (r, &first) in regs.iter().enumerate() {
                        let (fr, fc) = Fragments::acc(lane, r);
                        let (fr0, fc0) = Fragments::acc(lane, r & !1);
                        assert_eq!(
                            (fr, fc),
                            (fr0, fc0 + (r & 1)),
                            "register pairs are adjacent"
                        );
                        let row = warp_m * wm + mt * 16 + fr;
                        let col =
                            host_math::out_col(warp_n * wn + nt * 8 + fc, n_tile, bn, wn, gated);
                        if row >= valid_rows || col >= out_cols {
                            continue;
                        }
                        let up = if gated { up_frag[lane][r] } else { f32::NAN };
                        written.push((row, col, first, up));
                    }
                }
            }
        }
    }
    written
}

#[test]
fn emulated_block_tiles_compute_the_product() {
    let mut rng = common::rng("emulated_block_tiles_compute_the_product");
    for case in 0..36 {
        let block = BLOCKS[case % BLOCKS.len()];
        let (bm, bn, bk, ..) = block;
        let gated = case % 2 == 1;
        // K not a multiple of BK (masked tail), N not a multiple of the tile, a partial row tile.
        let k = [bk, 3 * bk, bk + 8, 2 * bk - 8, 200][rng.random_range(0..5)];
        let n = 2 * rng.random_range(1..bn) + [0, bn][rng.random_range(0..2)];
        let valid_rows = rng.random_range(1..=bm);
        // Small integers: every sum is exact in f32, so the comparison is exact.
        let small = |rng: &mut StdRng, len: usize| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(-3..=3) as f32).collect()
        };
        let x = small(&mut rng, bm * k);
        let w = small(&mut rng, n * k);
        let dot =
            |r: usize, wr: usize| -> f32 { (0..k).map(|c| x[r * k + c] * w[wr * k + c]).sum() };
        let out_cols = if gated { n / 2 } else { n };
        let n_tiles = host_math::n_tiles(n, bn, gated);
        let mut seen = vec![0u32; bm * out_cols];
        for n_tile in 0..n_tiles {
            for (row, col, first, up) in
                emulate_block(block, &x, valid_rows, &w, n, k, n_tile, gated)
            {
                let what = format!(
                    "case {case}: block {block:?}, n {n}, k {k}, gated {gated}, row {row}, col {col}"
                );
                let col = col as usize;
                seen[row * out_cols + col] += 1;
                assert_eq!(first, dot(row, col), "{what}: gate / plain accumulator");
                if gated {
                    assert_eq!(up, dot(row, n / 2 + col), "{what}: up accumulator");
                }
            }
        }
        for row in 0..bm {
            for col in 0..out_cols {
                let want = u32::from(row < valid_rows);
                assert_eq!(
                    seen[row * out_cols + col],
                    want,
                    "case {case}: ({row}, {col})"
                );
            }
        }
    }
}

#[test]
fn activations_match_the_rust_definitions() {
    let mut rng = common::rng("activations_match_the_rust_definitions");
    let mut xs = common::uniform(&mut rng, 20_000, -30.0, 30.0);
    xs.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        88.0,
        -88.0,
        100.0,
        -100.0,
        f32::MAX,
        f32::MIN,
    ]);
    for kind in [ActivationKind::Silu, ActivationKind::GeluTanh] {
        for &x in &xs {
            let (got, want) = (host_math::activation(kind, x), kind.apply(x));
            // Same formula, same operation order: at most the libraries' last-ulp difference.
            let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
            assert!(
                got == want || ulps <= 2,
                "{kind:?}({x}): kernel formula {got} vs Rust {want}"
            );
        }
    }
}

#[test]
fn clamped_swiglu_matches_the_rust_definition() {
    let mut rng = common::rng("clamped_swiglu_matches_the_rust_definition");
    let gates = common::uniform(&mut rng, 20_000, -20.0, 20.0);
    let ups = common::uniform(&mut rng, 20_000, -20.0, 20.0);
    let (alpha, limit) = (1.702f32, 7.0f32);
    let kind = ActivationKind::ClampedSilu { alpha, limit };
    let edges = [
        (limit, limit),
        (limit, -limit),
        (-limit, limit),
        (8.0, -8.0),
        (0.0, -0.0),
    ];
    let pairs = gates.iter().copied().zip(ups).chain(edges);
    for (g, u) in pairs {
        let (got, want) = (
            host_math::clamped_swiglu(g, u, alpha, limit),
            kind.gated(g, u),
        );
        let ulps = (got.to_bits() as i64 - want.to_bits() as i64).abs();
        assert!(
            got == want || ulps <= 2,
            "clamped swiglu({g}, {u}): kernel formula {got} vs Rust {want}"
        );
    }
    // A NaN up stays NaN, as Rust's clamp keeps it.
    assert!(host_math::clamped_swiglu(1.0, f32::NAN, alpha, limit).is_nan());
}

#[test]
fn e4m3_decoding_matches_the_definition_on_every_code() {
    for code in 0..=255u8 {
        let (got, want) = (host_math::e4m3_to_f32(code), common::oracle::e4m3(code));
        assert!(
            got as f64 == want || (got.is_nan() && want.is_nan()),
            "code {code:#04x}: the kernels decode {got}, the definition gives {want}"
        );
        // Signed zeros too: the sign of 0x80 is kept.
        assert_eq!(got.is_sign_negative(), code & 0x80 != 0, "code {code:#04x}");
    }
}

#[test]
fn e2m1_and_e8m0_decoding_match_the_definitions_on_every_code() {
    for code in 0..16u8 {
        let (got, want) = (host_math::e2m1_to_f32(code), common::oracle::e2m1(code));
        assert!(
            got as f64 == want,
            "e2m1 code {code:#x}: the kernels decode {got}, the definition gives {want}"
        );
        // Signed zeros too: code 8 is -0. Only the low nibble counts.
        assert_eq!(got.is_sign_negative(), code & 8 != 0, "e2m1 code {code:#x}");
        assert_eq!(host_math::e2m1_to_f32(code | 0xf0).to_bits(), got.to_bits());
    }
    for byte in 0..=254u8 {
        let (got, want) = (host_math::e8m0_to_f32(byte), common::oracle::e8m0(byte));
        assert!(
            got as f64 == want,
            "e8m0 byte {byte}: the kernels decode {got}, the definition gives {want}"
        );
    }
    assert_eq!(host_math::e8m0_to_f32(255), f32::INFINITY);
}
