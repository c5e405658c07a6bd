//! Criterion benchmarks of every CPU stage and the whole CPU layer, on a Qwen3-30B-A3B-shaped block
//! (H 2048, I 768, E 128, k 8) at a few token counts.
//!
//! Run with `cargo bench --bench cpu_stages`.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use half::bf16;
use moe_kernels::cpu::combine::combine;
use moe_kernels::cpu::gemm::grouped_gemm;
use moe_kernels::cpu::layer::{CpuMoeLayer, MoeWeights};
use moe_kernels::cpu::permute::{gather, permute};
use moe_kernels::cpu::routing::route;
use moe_kernels::{ExpertsRef, MatMut, MatRef, MoeConfig};
use rand::{Rng, SeedableRng};
use std::hint::black_box;

fn randn(rng: &mut rand::rngs::StdRng, n: usize, s: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-s..s)).collect()
}

fn to_bf16(v: Vec<f32>) -> Vec<bf16> {
    v.into_iter().map(bf16::from_f32).collect()
}

fn stages(c: &mut Criterion) {
    let cfg = MoeConfig::qwen3_30b_a3b();
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let mut rng = rand::rngs::StdRng::seed_from_u64(30);
    let s_h = 1.0 / (h as f32).sqrt();
    let weights = MoeWeights {
        router: to_bf16(randn(&mut rng, e * h, s_h)),
        biases: None,
        correction_bias: None,
        gate_up: to_bf16(randn(&mut rng, e * 2 * i * h, s_h)),
        down: to_bf16(randn(&mut rng, e * h * i, 1.0 / (i as f32).sqrt())),
        shared: vec![],
    };
    let layer = CpuMoeLayer::new(cfg.clone(), weights).expect("valid weights");

    let mut g = c.benchmark_group("cpu");
    g.sample_size(10);
    for t in [1usize, 16, 128] {
        let x = to_bf16(randn(&mut rng, t * h, 1.0));
        let xv = MatRef::new("x", &x, t, h).unwrap();
        let logits = layer.router_logits(xv).unwrap();
        let lv = MatRef::new("logits", &logits, t, e).unwrap();
        g.throughput(Throughput::Elements(t as u64));
        g.bench_with_input(BenchmarkId::new("routing", t), &t, |b, _| {
            b.iter(|| route(&cfg.routing, black_box(lv), None).unwrap())
        });
        let routing = route(&cfg.routing, lv, None).unwrap();
        g.bench_with_input(BenchmarkId::new("permute+gather", t), &t, |b, _| {
            b.iter(|| {
                let p = permute(routing.ids_view(), e, 1).unwrap();
                let mut out = vec![bf16::ZERO; p.num_rows() * h];
                gather(
                    xv,
                    &p,
                    &mut MatMut::new("g", &mut out, p.num_rows(), h).unwrap(),
                )
                .unwrap();
                out
            })
        });
        let p = permute(routing.ids_view(), e, 1).unwrap();
        let rows = p.num_rows();
        let gathered = to_bf16(randn(&mut rng, rows * h, 1.0));
        let w_up = ExpertsRef::new("w", &layer.weights().gate_up, e, 2 * i, h).unwrap();
        g.bench_with_input(BenchmarkId::new("up_gemm", t), &t, |b, _| {
            let mut out = vec![bf16::ZERO; rows * 2 * i];
            b.iter(|| {
                grouped_gemm(
                    MatRef::new("g", &gathered, rows, h).unwrap(),
                    p.expert_offsets(),
                    w_up,
                    &mut MatMut::new("o", &mut out, rows, 2 * i).unwrap(),
                )
                .unwrap()
            })
        });
        let y = to_bf16(randn(&mut rng, rows * h, 1.0));
        g.bench_with_input(BenchmarkId::new("combine", t), &t, |b, _| {
            let mut out = vec![bf16::ZERO; t * h];
            b.iter(|| {
                combine(
                    MatRef::new("y", &y, rows, h).unwrap(),
                    &p,
                    routing.weights_view(),
                    None::<MatRef<'_, f32>>,
                    &mut MatMut::new("o", &mut out, t, h).unwrap(),
                )
                .unwrap()
            })
        });
        g.bench_with_input(BenchmarkId::new("layer", t), &t, |b, _| {
            b.iter(|| layer.forward(black_box(xv)).unwrap())
        });
    }
    g.finish();
}

criterion_group!(benches, stages);
criterion_main!(benches);
