//! The mutation table (README): each fixture in tests/fixtures/mutations is a copy of a pattern
//! of the real kernels, compiled twice by nvcc, correct and with one deliberate bug (-DMUTANT).
//! The correct version must pass every check and match an independent oracle; the mutant must
//! produce the finding its row names (or, where no sanitizer can see the bug, the wrong result or
//! the counter that shows it). Inputs are seeded random data; the seed is printed.

mod common;

use common::*;
use ptx_emu::Check;

fn seed(test: &str) -> u64 {
    let s = std::env::var("PTX_EMU_TEST_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(7)
        });
    eprintln!("[{test}] seed = {s} (replay with PTX_EMU_TEST_SEED={s})");
    s
}

/// xorshift64*.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn rng(test: &str) -> Rng {
    Rng(seed(test) | 1)
}

#[test]
fn block_scan_without_its_barrier_is_a_race() {
    let mut r = rng("block_scan");
    let (blocks, threads) = (2usize, 256usize);
    let input: Vec<i64> = (0..blocks * threads)
        .map(|_| (r.next() % 1000) as i64 - 500)
        .collect();
    let mut want = vec![0i64; input.len()];
    for b in 0..blocks {
        let mut acc = 0;
        for t in 0..threads {
            acc += input[b * threads + t];
            want[b * threads + t] = acc;
        }
    }
    let e = emu();
    let inp = upload(&e, &input);
    let out = alloc::<i64>(&e, input.len());
    let args = [Arg::U64(inp), Arg::U64(out)];
    launch(
        &e,
        &fixture("mutations/block_scan.ptx"),
        "block_scan",
        blocks as u32,
        threads as u32,
        &args,
    )
    .expect("the correct scan passes every check");
    assert_eq!(download::<i64>(&e, out, input.len()), want);
    let f = expect_finding(
        launch(
            &e,
            &fixture("mutations/block_scan.mutant.ptx"),
            "block_scan",
            blocks as u32,
            threads as u32,
            &args,
        ),
        Check::Racecheck,
    );
    assert!(f.what.contains("hazard"), "{f}");
    assert!(
        f.source
            .as_deref()
            .is_some_and(|s| s.starts_with("block_scan.cu:")),
        "{f}"
    );
}

#[test]
fn cp_async_wait_one_group_short_reads_a_pending_copy() {
    let mut r = rng("cp_async");
    let tiles = 10usize;
    let input: Vec<f32> = (0..tiles * 32 * 4).map(|_| r.unit()).collect();
    // Thread t sums the chunk of its neighbour (t + 1) % 32 over the tiles, in tile order.
    let mut want = vec![0f32; 32 * 4];
    for t in 0..32 {
        for k in 0..tiles {
            for c in 0..4 {
                want[t * 4 + c] += input[(k * 32 + (t + 1) % 32) * 4 + c];
            }
        }
    }
    let e = emu();
    let inp = upload(&e, &input);
    let out = alloc::<f32>(&e, 32 * 4);
    let args = [Arg::U64(inp), Arg::U64(out), Arg::I32(tiles as i32)];
    launch(
        &e,
        &fixture("mutations/cp_async_pipeline.ptx"),
        "pipeline",
        1,
        32,
        &args,
    )
    .expect("the correct pipeline passes every check");
    assert_eq!(download::<f32>(&e, out, 32 * 4), want);
    let f = expect_finding(
        launch(
            &e,
            &fixture("mutations/cp_async_pipeline.mutant.ptx"),
            "pipeline",
            1,
            32,
            &args,
        ),
        Check::Racecheck,
    );
    assert!(
        f.what.contains("cp.async destination before its wait"),
        "{f}"
    );
}

#[test]
fn a_missing_swizzle_shows_in_the_bank_conflict_counter() {
    let mut r = rng("swizzle");
    let rows = 64usize;
    let input: Vec<u16> = (0..rows * 32).map(|_| r.next() as u16).collect();
    // ldmatrix.x4 step (m, kk): matrix i = rows 16m + 8(i % 2).., K chunk 2kk + i / 2; lane l
    // receives row l / 4, elements 2(l % 4) and 2(l % 4) + 1 of each matrix.
    let n_loads = (rows / 16) * 2;
    let mut want = vec![0u32; n_loads * 32 * 4];
    for m in 0..rows / 16 {
        for kk in 0..2 {
            let n = m * 2 + kk;
            for lane in 0..32 {
                for i in 0..4 {
                    let row = m * 16 + 8 * (i % 2) + lane / 4;
                    let col = (2 * kk + i / 2) * 8 + 2 * (lane % 4);
                    let lo = input[row * 32 + col] as u32;
                    let hi = input[row * 32 + col + 1] as u32;
                    want[(n * 32 + lane) * 4 + i] = lo | (hi << 16);
                }
            }
        }
    }
    let mut e = emu();
    e.enable_counters();
    let inp = upload(&e, &input);
    let mut wavefronts = Vec::new();
    for name in ["mutations/swizzle.ptx", "mutations/swizzle.mutant.ptx"] {
        let out = alloc::<u32>(&e, want.len());
        let s = launch(
            &e,
            &fixture(name),
            "swizzle",
            1,
            128,
            &[Arg::U64(inp), Arg::U64(out)],
        )
        .unwrap_or_else(|err| panic!("{name}: {err}"));
        assert_eq!(
            download::<u32>(&e, out, want.len()),
            want,
            "{name}: the result is the same"
        );
        eprintln!(
            "{name}: {} shared wavefronts, {} without conflicts",
            s.shared_wavefronts, s.shared_ideal
        );
        wavefronts.push((s.shared_wavefronts, s.shared_ideal));
    }
    let (good, bad) = (wavefronts[0], wavefronts[1]);
    assert_eq!(good.0, good.1, "the swizzled layout is conflict free");
    assert!(
        bad.0 >= 2 * bad.1,
        "without the swizzle the counter shows conflicts: {bad:?}"
    );
}

#[test]
fn ldmatrix_trans_swapped_gives_a_wrong_product() {
    let mut r = rng("ldmatrix");
    let bf = |x: f32| (x.to_bits() >> 16) as u16; // truncation: exact bf16 values
    let a: Vec<u16> = (0..16 * 16).map(|_| bf(r.unit())).collect();
    let b: Vec<u16> = (0..8 * 16).map(|_| bf(r.unit())).collect();
    let v = |h: u16| f32::from_bits((h as u32) << 16) as f64;
    // D[i][j] = sum_k A[i][k] B[j][k] (B's rows hold K).
    let mut want = vec![0f64; 16 * 8];
    for i in 0..16 {
        for j in 0..8 {
            want[i * 8 + j] = (0..16).map(|k| v(a[i * 16 + k]) * v(b[j * 16 + k])).sum();
        }
    }
    let e = emu();
    let (da, db) = (upload(&e, &a), upload(&e, &b));
    let close = |got: &[f32]| {
        got.iter()
            .zip(&want)
            .all(|(g, w)| (*g as f64 - w).abs() <= 1e-5 * (1.0 + w.abs()))
    };
    let out = alloc::<f32>(&e, 128);
    launch(
        &e,
        &fixture("mutations/ldmatrix_mma.ptx"),
        "tile_mma",
        1,
        32,
        &[Arg::U64(da), Arg::U64(db), Arg::U64(out)],
    )
    .expect("the correct tile passes every check");
    assert!(
        close(&download::<f32>(&e, out, 128)),
        "the correct fragments give A B^T"
    );
    let out = alloc::<f32>(&e, 128);
    launch(
        &e,
        &fixture("mutations/ldmatrix_mma.mutant.ptx"),
        "tile_mma",
        1,
        32,
        &[Arg::U64(da), Arg::U64(db), Arg::U64(out)],
    )
    .expect("no sanitizer sees a transposed fragment");
    assert!(
        !close(&download::<f32>(&e, out, 128)),
        "the transposed B fragment gives a wrong product"
    );
}

#[test]
fn an_off_by_one_tile_bound_reads_out_of_bounds() {
    let mut r = rng("tile_bound");
    let (rows, cols) = (37usize, 8usize);
    let input: Vec<f32> = (0..rows * cols).map(|_| r.unit()).collect();
    let e = emu();
    let inp = upload(&e, &input);
    let out = alloc::<f32>(&e, rows * cols);
    let grid = rows.div_ceil(16) as u32;
    let args = [
        Arg::U64(inp),
        Arg::U64(out),
        Arg::I32(rows as i32),
        Arg::I32(cols as i32),
    ];
    launch(
        &e,
        &fixture("mutations/tile_bound.ptx"),
        "tile_copy",
        grid,
        64,
        &args,
    )
    .expect("in bounds");
    let got = download::<f32>(&e, out, rows * cols);
    assert!(got.iter().zip(&input).all(|(g, x)| *g == 2.0 * x));
    let f = expect_finding(
        launch(
            &e,
            &fixture("mutations/tile_bound.mutant.ptx"),
            "tile_copy",
            grid,
            64,
            &args,
        ),
        Check::Memcheck,
    );
    assert!(f.what.contains("out-of-bounds global load"), "{f}");
    assert_eq!(
        f.address,
        Some(inp + (rows * cols * 4) as u64),
        "the first byte past the input"
    );
    assert!(f.message.contains("past the end"), "{f}");
}

#[test]
fn reading_shared_memory_nothing_wrote_is_an_initcheck_finding() {
    let mut r = rng("shared_uninit");
    let n = 256usize;
    let input: Vec<f32> = (0..n).map(|_| r.unit()).collect();
    let e = emu();
    let inp = upload(&e, &input);
    let out = alloc::<f32>(&e, n);
    let args = [Arg::U64(inp), Arg::U64(out)];
    launch(
        &e,
        &fixture("mutations/shared_uninit.ptx"),
        "neighbour_sum",
        1,
        n as u32,
        &args,
    )
    .expect("all written");
    let got = download::<f32>(&e, out, n);
    for t in 0..n {
        assert_eq!(got[t], input[t] + input[(t + 1) % n]);
    }
    let f = expect_finding(
        launch(
            &e,
            &fixture("mutations/shared_uninit.mutant.ptx"),
            "neighbour_sum",
            1,
            n as u32,
            &args,
        ),
        Check::Initcheck,
    );
    assert!(f.what.contains("uninitialized shared memory read"), "{f}");
}

#[test]
fn a_full_mask_shuffle_in_divergent_code_is_a_synccheck_finding() {
    let mut r = rng("divergent_shfl");
    let n = 64usize;
    let input: Vec<i32> = (0..n).map(|_| (r.next() % 1000) as i32).collect();
    let e = emu();
    let inp = upload(&e, &input);
    let out = alloc::<i32>(&e, n);
    let args = [Arg::U64(inp), Arg::U64(out)];
    launch(
        &e,
        &fixture("mutations/divergent_shfl.ptx"),
        "broadcast",
        1,
        n as u32,
        &args,
    )
    .expect("converged");
    let got = download::<i32>(&e, out, n);
    for t in 0..n {
        assert_eq!(got[t], input[t - t % 32] + (t % 32) as i32);
    }
    let f = expect_finding(
        launch(
            &e,
            &fixture("mutations/divergent_shfl.mutant.ptx"),
            "broadcast",
            1,
            n as u32,
            &args,
        ),
        Check::Synccheck,
    );
    assert!(f.what.contains("shfl.sync"), "{f}");
}
