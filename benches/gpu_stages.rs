//! Criterion benchmarks of every GPU stage and the whole GPU layer, on a Qwen3-30B-A3B-shaped block
//! (H 2048, I 768, E 128, k 8), timed by CUDA events recorded on the kernels' stream (a criterion
//! `Measurement`), so that what is measured is device time, not host launch time.
//!
//! Run with `cargo bench --bench gpu_stages`; without a GPU it prints why it skipped and exits.

use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{BenchmarkId, Criterion, Throughput};
use cudarc::driver::sys::CUevent_flags;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};
use half::bf16;
use moe_kernels::cpu::layer::MoeWeights;
use moe_kernels::gpu::{
    combine, gather, grouped_gemm, permute, route, Device, DeviceStatus, GemmEpilogue, GpuMoeLayer,
    GpuPermutation, GroupedGemmShape,
};
use moe_kernels::MoeConfig;
use rand::{Rng, SeedableRng};
use std::sync::Arc;
use std::time::Duration;

/// Device time between two CUDA events recorded on the kernels' stream around criterion's batch of
/// iterations.
struct CudaEvents {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    wall: WallTime,
}

impl CudaEvents {
    fn event(&self) -> CudaEvent {
        let e = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .expect("create a CUDA event");
        e.record(&self.stream).expect("record a CUDA event");
        e
    }
}

impl Measurement for CudaEvents {
    type Intermediate = CudaEvent;
    type Value = Duration;

    fn start(&self) -> CudaEvent {
        self.event()
    }
    fn end(&self, start: CudaEvent) -> Duration {
        let end = self.event();
        end.synchronize().expect("wait for the benchmarked kernels");
        let ms = start.elapsed_ms(&end).expect("read the CUDA event timer");
        Duration::from_secs_f64(ms as f64 * 1e-3)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, v: &Duration) -> f64 {
        v.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        self.wall.formatter()
    }
}

fn randn(rng: &mut rand::rngs::StdRng, n: usize, s: f32) -> Vec<bf16> {
    (0..n)
        .map(|_| bf16::from_f32(rng.random_range(-s..s)))
        .collect()
}

fn stages(c: &mut Criterion<CudaEvents>, dev: &Device) -> moe_kernels::Result<()> {
    let cfg = MoeConfig::qwen3_30b_a3b();
    let (h, i, e, k) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
        cfg.routing.top_k,
    );
    let up = cfg.activation.up_rows(i);
    let mut rng = rand::rngs::StdRng::seed_from_u64(30);
    let s_h = 1.0 / (h as f32).sqrt();
    let weights = MoeWeights {
        router: randn(&mut rng, e * h, s_h),
        biases: None,
        correction_bias: None,
        gate_up: randn(&mut rng, e * up * h, s_h),
        down: randn(&mut rng, e * h * i, 1.0 / (i as f32).sqrt()),
        shared: vec![],
    };
    let layer = GpuMoeLayer::upload(dev, &cfg, &weights)?;
    let stream = dev.stream().clone();

    let mut g = c.benchmark_group("gpu");
    for t in [1usize, 128, 4096] {
        let rows = t * k;
        let x = stream.clone_htod(&randn(&mut rng, t * h, 1.7))?;
        let mut out = stream.alloc_zeros::<bf16>(t * h)?;
        let mut ws = layer.workspace(dev, t)?;
        layer.forward(dev, &x.as_view(), t, &mut ws, &mut out.as_view_mut())?;
        let mut logits = stream.alloc_zeros::<f32>(t * e)?;
        stream.memcpy_dtod(&ws.router_logits(), &mut logits)?;
        let mut ids = stream.alloc_zeros::<i32>(rows)?;
        let mut wts = stream.alloc_zeros::<f32>(rows)?;
        let mut status = DeviceStatus::new(dev)?;
        let mut perm = GpuPermutation::new(dev, t, k, e, 1)?;
        let mut gathered = stream.alloc_zeros::<bf16>(rows * h)?;
        let mut act = stream.alloc_zeros::<bf16>(rows * i)?;
        let mut y = stream.alloc_zeros::<bf16>(rows * h)?;
        route(
            dev,
            &cfg.routing,
            &logits.as_view(),
            t,
            None,
            &mut ids.as_view_mut(),
            &mut wts.as_view_mut(),
            &mut status,
        )?;
        permute(dev, &ids.as_view(), t, e, 1, &mut perm, &mut status)?;
        dev.synchronize()?;
        status.check()?;

        g.throughput(Throughput::Elements(t as u64));
        g.bench_with_input(BenchmarkId::new("routing", t), &t, |b, _| {
            b.iter(|| {
                route(
                    dev,
                    &cfg.routing,
                    &logits.as_view(),
                    t,
                    None,
                    &mut ids.as_view_mut(),
                    &mut wts.as_view_mut(),
                    &mut status,
                )
                .expect("route")
            })
        });
        g.bench_with_input(BenchmarkId::new("permute+gather", t), &t, |b, _| {
            b.iter(|| {
                permute(dev, &ids.as_view(), t, e, 1, &mut perm, &mut status).expect("permute");
                gather(dev, &x.as_view(), h, &perm, &mut gathered.as_view_mut()).expect("gather")
            })
        });
        let up_shape = GroupedGemmShape {
            rows,
            n: up,
            k: h,
            num_experts: e,
        };
        g.bench_with_input(BenchmarkId::new("up_gemm", t), &t, |b, _| {
            b.iter(|| {
                grouped_gemm::<bf16, bf16>(
                    dev,
                    &gathered.as_view(),
                    Some(&perm.expert_offsets()),
                    &layer.weights().gate_up(),
                    up_shape,
                    GemmEpilogue::Activation(cfg.activation),
                    &mut act.as_view_mut(),
                )
                .expect("up GEMM")
            })
        });
        let down_shape = GroupedGemmShape {
            rows,
            n: h,
            k: i,
            num_experts: e,
        };
        g.bench_with_input(BenchmarkId::new("down_gemm", t), &t, |b, _| {
            b.iter(|| {
                grouped_gemm::<bf16, bf16>(
                    dev,
                    &act.as_view(),
                    Some(&perm.expert_offsets()),
                    &layer.weights().down(),
                    down_shape,
                    GemmEpilogue::Store,
                    &mut y.as_view_mut(),
                )
                .expect("down GEMM")
            })
        });
        g.bench_with_input(BenchmarkId::new("combine", t), &t, |b, _| {
            b.iter(|| {
                combine::<bf16, f32, bf16>(
                    dev,
                    &y.as_view(),
                    h,
                    &perm,
                    &wts.as_view(),
                    None,
                    &mut out.as_view_mut(),
                )
                .expect("combine")
            })
        });
        g.bench_with_input(BenchmarkId::new("layer", t), &t, |b, _| {
            b.iter(|| {
                layer
                    .forward(dev, &x.as_view(), t, &mut ws, &mut out.as_view_mut())
                    .expect("forward")
            })
        });
        dev.synchronize()?;
        status.check()?;
        ws.status().check()?;
    }
    g.finish();
    Ok(())
}

fn main() {
    let dev = match Device::new(0) {
        Ok(dev) => dev,
        Err(why) => {
            eprintln!("SKIPPED gpu_stages: {why}");
            return;
        }
    };
    let measurement = CudaEvents {
        ctx: dev.context().clone(),
        stream: dev.stream().clone(),
        wall: WallTime,
    };
    let mut c = Criterion::default()
        .with_measurement(measurement)
        .configure_from_args();
    if let Err(e) = stages(&mut c, &dev) {
        eprintln!("gpu_stages failed: {e}");
        std::process::exit(1);
    }
    c.final_summary();
}
