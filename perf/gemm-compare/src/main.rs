//! Grouped expert GEMMs `Y[rows of e] = X[rows of e] @ W_e^T` on OLMoE-1B-7B shapes, timed three
//! ways in one process, interleaved: moe-kernels' fast backend (one grouped call), the `gemm` crate
//! once per expert with its own threads, and the `gemm` crate single-threaded inside a rayon loop
//! over the experts. Prints median milliseconds and the weight bytes streamed per second, after the
//! machine's read ceiling: every thread XOR-folding its part of a 1 GiB buffer (larger than this
//! machine's L3), bytes read per second.
//!
//! Arguments: seconds of repetitions per measurement (default 1), and the element types to run
//! (default `f32,f16,bf16`).

use half::{bf16, f16};
use moe_kernels::cpu::fast::{grouped_gemm, Isa};
use moe_kernels::{Element, ExpertsRef, MatMut, MatRef};
use rayon::prelude::*;
use std::time::{Duration, Instant};

/// A small deterministic generator (values in [-1, 1)).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// One grouped GEMM problem: `experts` experts of `[n, k]` weights, `m` rows each.
struct Problem {
    name: &'static str,
    experts: usize,
    m: usize,
    n: usize,
    k: usize,
}

/// Median of `f`'s wall time over repetitions filling about `budget`, at least 5.
fn time(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let mut times = vec![];
    let start = Instant::now();
    while times.len() < 5 || start.elapsed() < budget {
        let t = Instant::now();
        f();
        times.push(t.elapsed().as_secs_f64());
    }
    times.sort_by(f64::total_cmp);
    times[times.len() / 2]
}

/// Times of (ours, gemm per expert, gemm in a rayon loop) for element type `T`, or `None` for the
/// `gemm` crate where it has no kernels of `T`.
fn run<T: Element + Send + Sync + 'static>(
    p: &Problem,
    budget: Duration,
    with_gemm: bool,
) -> [Option<f64>; 3] {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let rows = p.experts * p.m;
    let w: Vec<T> = (0..p.experts * p.n * p.k)
        .map(|_| T::from_f32(rng.next() * 0.05))
        .collect();
    let x: Vec<T> = (0..rows * p.k).map(|_| T::from_f32(rng.next())).collect();
    let offsets: Vec<usize> = (0..=p.experts).map(|e| e * p.m).collect();
    let mut out = vec![T::from_f32(0.0); rows * p.n];
    let ours = time(budget, || {
        let xm = MatRef::new("x", &x, rows, p.k).unwrap();
        let wr = ExpertsRef::new("w", &w, p.experts, p.n, p.k).unwrap();
        let mut om = MatMut::new("out", &mut out, rows, p.n).unwrap();
        grouped_gemm(Isa::best(), xm, &offsets, wr, &mut om).unwrap();
    });
    if !with_gemm {
        return [Some(ours), None, None];
    }
    // One expert's `[m, n]` output: dst[i, j] = sum_l x[i, l] w[j, l]; rhs is W^T (column stride k).
    let expert = |e: usize, dst: &mut [T], par: gemm::Parallelism| {
        let (xe, we) = (&x[e * p.m * p.k..], &w[e * p.n * p.k..]);
        // SAFETY: the pointers cover [m, k], [n, k] and [m, n] row-major matrices with the strides
        // given.
        unsafe {
            gemm::gemm(
                p.m,
                p.n,
                p.k,
                dst.as_mut_ptr(),
                1,
                p.n as isize,
                false,
                xe.as_ptr(),
                1,
                p.k as isize,
                we.as_ptr(),
                p.k as isize,
                1,
                T::from_f32(0.0),
                T::from_f32(1.0),
                false,
                false,
                false,
                par,
            )
        }
    };
    let threads = rayon::current_num_threads();
    let per_expert = time(budget, || {
        for (e, dst) in out.chunks_mut(p.m * p.n).enumerate() {
            expert(e, dst, gemm::Parallelism::Rayon(threads));
        }
    });
    let looped = time(budget, || {
        out.par_chunks_mut(p.m * p.n)
            .enumerate()
            .for_each(|(e, dst)| expert(e, dst, gemm::Parallelism::None));
    });
    [Some(ours), Some(per_expert), Some(looped)]
}

/// Bytes per second of every thread reading its part of a 1 GiB buffer.
fn read_ceiling(budget: Duration) -> f64 {
    let words: Vec<u64> = (0..1u64 << 27)
        .map(|i| i.wrapping_mul(0x9e37_79b9))
        .collect();
    let mut sink = 0;
    let t = time(budget, || {
        sink ^= words
            .par_chunks(1 << 20)
            .map(|c| c.iter().fold(0, |a, &b| a ^ b))
            .reduce(|| 0, |a, b| a ^ b);
    });
    std::hint::black_box(sink);
    (8usize << 27) as f64 / t
}

fn main() {
    let mut args = std::env::args().skip(1);
    let budget = Duration::from_secs_f64(
        args.next()
            .map_or(1.0, |s| s.parse().expect("seconds per measurement")),
    );
    let types = args.next().unwrap_or_else(|| "f32,f16,bf16".into());
    let wanted = |ty: &str| types.split(',').any(|t| t == ty);
    // OLMoE-1B-7B: H 2048, I 1024, E 64, k 8. 1 token: 8 experts of 1 row; 16 tokens: 128 rows over
    // 64 experts (2 each); 256 tokens: 2048 rows (32 each).
    let problems = [
        Problem {
            name: "up, 1 token",
            experts: 8,
            m: 1,
            n: 2048,
            k: 2048,
        },
        Problem {
            name: "up, 16 tokens",
            experts: 64,
            m: 2,
            n: 2048,
            k: 2048,
        },
        Problem {
            name: "up, 256 tokens",
            experts: 64,
            m: 32,
            n: 2048,
            k: 2048,
        },
        Problem {
            name: "down, 256 tokens",
            experts: 64,
            m: 32,
            n: 2048,
            k: 1024,
        },
    ];
    println!(
        "isa {:?}, {} threads",
        Isa::best(),
        rayon::current_num_threads()
    );
    println!(
        "read ceiling (1 GiB, every thread): {:.1} GB/s",
        read_ceiling(budget) / 1e9
    );
    println!("| shape | type | ours | gemm, per expert | gemm, experts in parallel | ours GB/s | ours GFLOP/s |");
    println!("|---|---|---:|---:|---:|---:|---:|");
    for p in &problems {
        for (ty, bytes) in [("f32", 4), ("f16", 2), ("bf16", 2)] {
            if !wanted(ty) {
                continue;
            }
            let times = match ty {
                "f32" => run::<f32>(p, budget, true),
                "f16" => run::<f16>(p, budget, true),
                _ => run::<bf16>(p, budget, false),
            };
            let ms = |t: Option<f64>| t.map_or("-".to_string(), |t| format!("{:.2} ms", t * 1e3));
            let ours = times[0].unwrap();
            let gb = (p.experts * p.n * p.k * bytes) as f64 / ours / 1e9;
            let gf = (2 * p.experts * p.m * p.n * p.k) as f64 / ours / 1e9;
            println!(
                "| {} | {ty} | {} | {} | {} | {gb:.1} | {gf:.0} |",
                p.name,
                ms(times[0]),
                ms(times[1]),
                ms(times[2])
            );
        }
    }
}
