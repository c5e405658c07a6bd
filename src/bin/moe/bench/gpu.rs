//! The GPU side of the benchmark: every stage and the whole layer timed with CUDA events on the kernels'
//! own stream (L2 flushed before each timed run), CUDA-graph replays at small token counts, the
//! ceilings (device-to-device copy bandwidth, cuBLAS bf16 GEMM) and the cuBLAS peers measured in the
//! same run, each configuration first checked against the CPU reference.

use anyhow::{bail, Context, Result};
use cudarc::cublas::sys::cublasOperation_t;
use cudarc::cublas::{CudaBlas, Gemm, GemmConfig};
use cudarc::driver::sys::{
    CUdevice_attribute, CUevent_flags, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use cudarc::driver::{CudaEvent, CudaSlice, CudaView, CudaViewMut};
use half::bf16;
use moe_kernels::cpu::layer::CpuMoeLayer;
use moe_kernels::gpu::{
    combine, gather, grouped_gemm, permute, route, Device, DeviceStatus, GemmEpilogue,
    GpuExpertStorage, GpuMoeLayer, GpuPermutation, GpuQuantExperts, GroupedGemmShape,
    UploadExperts,
};
use moe_kernels::MatRef;

use super::super::common::{rel_l2, FastRng};
use super::measure::{Budget, Stage, Stats};
use super::report::Ceilings;

/// The L2 flush before each timed run writes this many times the device's L2 size: after it, nothing
/// the previous run left in L2 is still there.
const FLUSH_L2_MULTIPLE: usize = 4;
/// The bandwidth ceiling copies this many times the L2 size (read and written once each), so that at
/// most one L2 of dirty lines (a few percent of the traffic) can still be unwritten when it is timed.
const COPY_L2_MULTIPLE: usize = 16;
/// The L2 size assumed when the device does not report one (the H100/H200 L2 is 50 MiB, most GPUs'
/// are smaller).
const FALLBACK_L2_BYTES: usize = 64 << 20;
/// Side of the square GEMM that measures the cuBLAS ceiling.
const CEILING_GEMM: usize = 8192;
/// Token counts up to which the layer is also timed as a CUDA-graph replay.
pub const GRAPH_MAX_TOKENS: usize = 128;
/// Tokens of each configuration checked against the CPU reference before timing.
const CHECK_TOKENS: usize = 8;
/// Largest relative L2 error of the checked tokens (bf16 data, f32 accumulation).
const CHECK_TOLERANCE: f64 = 2e-2;

/// A GPU with what the benchmark needs around the crate's kernels.
pub struct Gpu {
    /// The crate's device (its stream runs every kernel).
    pub dev: Device,
    timer: Timer,
    blas: Option<CudaBlas>,
}

/// CUDA events around each timed run, and the buffer that flushes L2 between runs
/// ([`FLUSH_L2_MULTIPLE`] times the L2 size).
struct Timer {
    start: CudaEvent,
    end: CudaEvent,
    flush: CudaSlice<u8>,
}

/// One GPU configuration's results.
pub struct GpuTimings {
    /// This crate's stages and layer.
    pub stages: Vec<(Stage, Stats)>,
    /// The layer replayed from a CUDA graph (small token counts).
    pub graph: Option<Stats>,
    /// cuBLAS, one GEMM per touched expert: (up, down).
    pub cublas_per_expert: Option<(Stats, Stats)>,
    /// cuBLAS, one dense GEMM of the same FLOPs as each grouped GEMM: (up, down).
    pub cublas_dense: Option<(Stats, Stats)>,
    /// Distinct experts the routing touched.
    pub touched: usize,
    /// Relative L2 error of the checked tokens against the CPU reference.
    pub check_error: f64,
}

impl Gpu {
    /// The benchmark's tools around `dev`; cuBLAS is optional (without it its peers and ceiling are
    /// skipped, and the returned note says so).
    pub fn new(dev: Device) -> Result<(Gpu, Option<String>)> {
        let ctx = dev.context().clone();
        // The graph replays capture forwards whose buffers were used before the capture; cudarc's
        // per-buffer event tracking would make the capture wait on those outside events, which CUDA
        // forbids. Every buffer of the benchmark is created after this and used only on the
        // device's one stream, which orders all of it.
        // SAFETY: all work of this benchmark is enqueued on `dev.stream()`; no buffer is used on
        // another stream, and the stream is synchronised (each timing ends with an event wait)
        // before any buffer is dropped.
        unsafe { ctx.disable_event_tracking() };
        let start = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let end = ctx.new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))?;
        let flush = dev
            .stream()
            .alloc_zeros::<u8>(FLUSH_L2_MULTIPLE * l2_bytes(&dev)?)?;
        let (blas, note) = if moe_kernels::gpu::cuda_library_present("cublas") {
            (Some(CudaBlas::new(dev.stream().clone())?), None)
        } else {
            (
                None,
                Some("cuBLAS (libcublas) was not found: no cuBLAS ceiling or peers".to_string()),
            )
        };
        Ok((
            Gpu {
                dev,
                timer: Timer { start, end, flush },
                blas,
            },
            note,
        ))
    }

    /// The GPU's name and compute capability.
    pub fn name(&self) -> Result<String> {
        let ctx = self.dev.context();
        let (major, minor) = ctx.compute_capability()?;
        Ok(format!(
            "{} (sm_{major}{minor}, {:.0} GiB)",
            ctx.name()?,
            ctx.total_mem()? as f64 / (1u64 << 30) as f64
        ))
    }

    /// The ceilings: device-to-device copy bandwidth ([`COPY_L2_MULTIPLE`] times the L2 size), and
    /// cuBLAS bf16 on an 8192^3 GEMM.
    pub fn ceilings(&mut self, budget: Budget) -> Result<Ceilings> {
        let stream = self.dev.stream().clone();
        let copy_bytes = COPY_L2_MULTIPLE * l2_bytes(&self.dev)?;
        let src = stream.alloc_zeros::<u8>(copy_bytes)?;
        let mut dst = stream.alloc_zeros::<u8>(copy_bytes)?;
        let copy = self.timer.time(&self.dev, budget, |d| {
            d.stream().memcpy_dtod(&src, &mut dst)?;
            Ok(())
        })?;
        drop((src, dst));
        let copy_gbps = 2.0 * copy_bytes as f64 / (copy.median_us * 1e-6) / 1e9;
        let gemm_tflops = if let Some(blas) = &self.blas {
            let n = CEILING_GEMM;
            let mut rng = FastRng::new(7);
            let a = stream.clone_htod(&rng.values::<bf16>(n * n, 1.0))?;
            let b = stream.clone_htod(&rng.values::<bf16>(n * n, 1.0))?;
            let mut c = stream.alloc_zeros::<bf16>(n * n)?;
            let stats = self.timer.time(&self.dev, budget, |_| {
                blas_gemm(
                    blas,
                    &a.as_view(),
                    &b.as_view(),
                    &mut c.as_view_mut(),
                    n,
                    n,
                    n,
                )
            })?;
            Some(2.0 * (n as f64).powi(3) / (stats.median_us * 1e-6) / 1e12)
        } else {
            None
        };
        Ok(Ceilings {
            copy_gbps,
            gemm_tflops,
            method: format!(
                "GPU: median of CUDA-event-timed {} MiB device-to-device copies ({COPY_L2_MULTIPLE} \
                 x L2); cuBLAS bf16 {CEILING_GEMM}^3 GEMM (f32 accumulation)",
                copy_bytes >> 20
            ),
        })
    }
}

/// The device's L2 size in bytes (`CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE`), or [`FALLBACK_L2_BYTES`]
/// when it reports none.
fn l2_bytes(dev: &Device) -> Result<usize> {
    let reported = dev
        .context()
        .attribute(CUdevice_attribute::CU_DEVICE_ATTRIBUTE_L2_CACHE_SIZE)?;
    Ok(usize::try_from(reported)
        .ok()
        .filter(|&b| b > 0)
        .unwrap_or(FALLBACK_L2_BYTES))
}

impl Timer {
    /// Time `f` with CUDA events around each run on the kernels' stream, flushing L2 before each
    /// (outside the timed interval); one untimed warm-up run first.
    fn time(
        &mut self,
        dev: &Device,
        budget: Budget,
        mut f: impl FnMut(&Device) -> Result<()>,
    ) -> Result<Stats> {
        let stream = dev.stream();
        f(dev)?;
        stream.synchronize()?;
        let mut samples = Vec::new();
        let started = std::time::Instant::now();
        while samples.len() < budget.max_samples
            && (samples.len() < budget.min_samples
                || started.elapsed().as_secs_f64() < budget.min_seconds)
        {
            stream.memset_zeros(&mut self.flush)?;
            self.start.record(stream)?;
            f(dev)?;
            self.end.record(stream)?;
            self.end.synchronize()?;
            samples.push(self.start.elapsed_ms(&self.end)? as f64 * 1e3);
        }
        Ok(Stats::from_samples(samples))
    }
}

/// Row-major `y [m, n] = x [m, k] @ w [n, k]^T` with cuBLAS (column-major: `y^T = w x^T`).
fn blas_gemm(
    blas: &CudaBlas,
    x: &CudaView<'_, bf16>,
    w: &CudaView<'_, bf16>,
    y: &mut CudaViewMut<'_, bf16>,
    m: usize,
    n: usize,
    k: usize,
) -> Result<()> {
    if x.len() < m * k || w.len() < n * k || y.len() < m * n {
        bail!("cuBLAS GEMM buffers too small for [{m}, {k}] x [{n}, {k}]^T");
    }
    let cfg = GemmConfig {
        transa: cublasOperation_t::CUBLAS_OP_T,
        transb: cublasOperation_t::CUBLAS_OP_N,
        m: i32::try_from(n)?,
        n: i32::try_from(m)?,
        k: i32::try_from(k)?,
        alpha: bf16::ONE,
        lda: i32::try_from(k)?,
        ldb: i32::try_from(k)?,
        beta: bf16::ZERO,
        ldc: i32::try_from(n)?,
    };
    // SAFETY: the buffer lengths were checked above against the GEMM's extents and leading
    // dimensions (w: n x k with ld k, x: m x k with ld k, y: m x n with ld n), all on the
    // stream cuBLAS was created with.
    unsafe { blas.gemm(cfg, w, x, y) }?;
    Ok(())
}

/// Routed expert weights as the stage timings run them: the grouped GEMM on their storage, and for
/// bf16 weights the values the cuBLAS peers multiply.
pub trait StageWeights: GpuExpertStorage {
    /// `out = epilogue(x @ w^T)` per expert, on the grouped GEMM that reads this storage.
    fn gemm(
        &self,
        dev: &Device,
        x: &CudaView<'_, bf16>,
        offsets: &CudaView<'_, i64>,
        shape: GroupedGemmShape,
        epilogue: GemmEpilogue,
        out: &mut CudaViewMut<'_, bf16>,
    ) -> Result<()>;

    /// The bf16 values, for the cuBLAS peers; `None` for quantized weights (no cuBLAS peer).
    fn values(&self) -> Option<CudaView<'_, bf16>>;
}

impl StageWeights for CudaSlice<bf16> {
    fn gemm(
        &self,
        dev: &Device,
        x: &CudaView<'_, bf16>,
        offsets: &CudaView<'_, i64>,
        shape: GroupedGemmShape,
        epilogue: GemmEpilogue,
        out: &mut CudaViewMut<'_, bf16>,
    ) -> Result<()> {
        let w = self.as_view();
        Ok(grouped_gemm(
            dev,
            x,
            Some(offsets),
            &w,
            shape,
            epilogue,
            out,
        )?)
    }

    fn values(&self) -> Option<CudaView<'_, bf16>> {
        Some(self.as_view())
    }
}

impl StageWeights for GpuQuantExperts {
    fn gemm(
        &self,
        dev: &Device,
        x: &CudaView<'_, bf16>,
        offsets: &CudaView<'_, i64>,
        shape: GroupedGemmShape,
        epilogue: GemmEpilogue,
        out: &mut CudaViewMut<'_, bf16>,
    ) -> Result<()> {
        Ok(self.grouped_gemm(dev, x, Some(offsets), shape, epilogue, out)?)
    }

    fn values(&self) -> Option<CudaView<'_, bf16>> {
        None
    }
}

/// Check and time one token count: the GPU layer against the CPU reference on a sample of tokens, then
/// every stage, the layer, its graph replay and the cuBLAS peers.
pub fn bench_tokens<S: UploadExperts>(
    gpu: &mut Gpu,
    cpu_layer: &CpuMoeLayer<bf16, S>,
    layer: &GpuMoeLayer<bf16, S::Gpu>,
    t: usize,
    seed: u64,
    budget: Budget,
) -> Result<GpuTimings>
where
    S::Gpu: StageWeights,
{
    let cfg = layer.config().clone();
    let (h, i, e, k) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
        cfg.routing.top_k,
    );
    let up = cfg.activation.up_rows(i);
    let rows = t * k;
    let Gpu { dev, timer, blas } = gpu;
    let stream = dev.stream().clone();
    let x_host = FastRng::new(seed).values::<bf16>(t * h, 1.7);
    let x = stream.clone_htod(&x_host)?;
    let mut out = stream.alloc_zeros::<bf16>(t * h)?;
    let mut ws = layer.workspace(dev, t)?;

    // 1. Correctness first: the layer's output on a sample of tokens against the CPU reference.
    layer.forward(dev, &x.as_view(), t, &mut ws, &mut out.as_view_mut())?;
    ws.status().check()?;
    let got = stream.clone_dtoh(&out)?;
    let sample: Vec<usize> = (0..CHECK_TOKENS.min(t))
        .map(|j| j * t / CHECK_TOKENS.min(t))
        .collect();
    let xs: Vec<bf16> = sample
        .iter()
        .flat_map(|&tok| x_host[tok * h..(tok + 1) * h].iter().copied())
        .collect();
    let want = cpu_layer.forward(MatRef::new("sampled hidden states", &xs, sample.len(), h)?)?;
    let (got, want) = (&got, &want.hidden);
    let check_error = rel_l2(sample.iter().enumerate().flat_map(|(j, &tok)| {
        (0..h).map(move |c| (got[tok * h + c].to_f64(), want[j * h + c].to_f64()))
    }));
    if check_error.is_nan() || check_error > CHECK_TOLERANCE {
        bail!(
            "the GPU layer disagrees with the CPU reference at {t} tokens: relative L2 error \
             {check_error:.3e} > {CHECK_TOLERANCE:.0e}; not timing it"
        );
    }
    let counts: Vec<i64> = stream.clone_dtoh(&ws.permutation().expert_counts())?;
    let touched = counts.iter().filter(|&&c| c > 0).count();

    // 2. Each stage alone, on buffers of its own; the inputs come from the checked forward.
    let weights = layer.weights();
    let mut logits = stream.alloc_zeros::<f32>(ws.router_logits().len())?;
    stream.memcpy_dtod(&ws.router_logits(), &mut logits)?;
    let bias = weights.correction_bias();
    let mut ids = stream.alloc_zeros::<i32>(rows)?;
    let mut wts = stream.alloc_zeros::<f32>(rows)?;
    let mut status = DeviceStatus::new(dev)?;
    let mut perm = GpuPermutation::new(dev, t, k, e, 1)?;
    let mut gathered = stream.alloc_zeros::<bf16>(rows * h)?;
    let mut act = stream.alloc_zeros::<bf16>(rows * i)?;
    let mut y = stream.alloc_zeros::<bf16>(rows * h)?;
    let mut stages = Vec::new();
    for stage in Stage::ALL {
        let stats = match stage {
            Stage::Routing => timer.time(dev, budget, |d| {
                Ok(route(
                    d,
                    &cfg.routing,
                    &logits.as_view(),
                    t,
                    bias.as_ref(),
                    &mut ids.as_view_mut(),
                    &mut wts.as_view_mut(),
                    &mut status,
                )?)
            })?,
            Stage::Permute => timer.time(dev, budget, |d| {
                permute(d, &ids.as_view(), t, e, 1, &mut perm, &mut status)?;
                Ok(gather(
                    d,
                    &x.as_view(),
                    h,
                    &perm,
                    &mut gathered.as_view_mut(),
                )?)
            })?,
            Stage::UpGemm => timer.time(dev, budget, |d| {
                let shape = GroupedGemmShape {
                    rows,
                    n: up,
                    k: h,
                    num_experts: e,
                };
                weights.gate_up_stored().gemm(
                    d,
                    &gathered.as_view(),
                    &perm.expert_offsets(),
                    shape,
                    GemmEpilogue::Activation(cfg.activation),
                    &mut act.as_view_mut(),
                )
            })?,
            Stage::DownGemm => timer.time(dev, budget, |d| {
                let shape = GroupedGemmShape {
                    rows,
                    n: h,
                    k: i,
                    num_experts: e,
                };
                weights.down_stored().gemm(
                    d,
                    &act.as_view(),
                    &perm.expert_offsets(),
                    shape,
                    GemmEpilogue::Store,
                    &mut y.as_view_mut(),
                )
            })?,
            Stage::Combine => timer.time(dev, budget, |d| {
                Ok(combine::<bf16, f32, bf16>(
                    d,
                    &y.as_view(),
                    h,
                    &perm,
                    &wts.as_view(),
                    None,
                    &mut out.as_view_mut(),
                )?)
            })?,
            Stage::Layer => timer.time(dev, budget, |d| {
                Ok(layer.forward(d, &x.as_view(), t, &mut ws, &mut out.as_view_mut())?)
            })?,
        };
        stages.push((stage, stats));
    }
    status.check()?;

    // 3. The layer as a CUDA-graph replay, where launch overhead matters.
    let graph = if t <= GRAPH_MAX_TOKENS {
        stream.begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)?;
        let captured = layer.forward(dev, &x.as_view(), t, &mut ws, &mut out.as_view_mut());
        let graph = stream.end_capture(CUgraphInstantiate_flags(0))?;
        captured?;
        let graph = graph.context("capturing the forward produced no graph")?;
        graph.upload()?;
        Some(timer.time(dev, budget, |_| Ok(graph.launch()?))?)
    } else {
        None
    };

    // 4. The cuBLAS peers, for bf16 weights: one GEMM per touched expert (what a naive engine
    // does), and one dense GEMM of the same FLOPs (the ceiling the grouped GEMM is held to).
    let values = (
        weights.gate_up_stored().values(),
        weights.down_stored().values(),
    );
    let (cublas_per_expert, cublas_dense) = match (blas.as_ref(), values) {
        (Some(blas), (Some(gate_up), Some(down))) => {
            let mut offsets = vec![0usize];
            for &c in &counts {
                offsets.push(offsets.last().copied().unwrap_or(0) + c.max(0) as usize);
            }
            // One GEMM per touched expert: rows a..b of `input` [rows, kk] times expert ex's
            // [n, kk] weights into rows a..b of `output` [rows, n].
            let mut per_expert = |input: &CudaSlice<bf16>,
                                  w: &CudaView<'_, bf16>,
                                  output: &mut CudaSlice<bf16>,
                                  n: usize,
                                  kk: usize|
             -> Result<Stats> {
                timer.time(dev, budget, |_| {
                    for (ex, seg) in offsets.windows(2).enumerate() {
                        let (a, b) = (seg[0], seg[1]);
                        if a < b {
                            blas_gemm(
                                blas,
                                &input.slice(a * kk..b * kk),
                                &w.slice(ex * n * kk..(ex + 1) * n * kk),
                                &mut output.slice_mut(a * n..b * n),
                                b - a,
                                n,
                                kk,
                            )?;
                        }
                    }
                    Ok(())
                })
            };
            let mut up_out = stream.alloc_zeros::<bf16>(rows * up)?;
            let up_stats = per_expert(&gathered, &gate_up, &mut up_out, up, h)?;
            let down_stats = per_expert(&act, &down, &mut y, h, i)?;
            // The dense GEMMs of equal FLOPs: all rows against the first expert's weights.
            let dense_up = timer.time(dev, budget, |_| {
                blas_gemm(
                    blas,
                    &gathered.as_view(),
                    &gate_up.slice(..up * h),
                    &mut up_out.as_view_mut(),
                    rows,
                    up,
                    h,
                )
            })?;
            let dense_down = timer.time(dev, budget, |_| {
                blas_gemm(
                    blas,
                    &act.as_view(),
                    &down.slice(..h * i),
                    &mut y.as_view_mut(),
                    rows,
                    h,
                    i,
                )
            })?;
            (Some((up_stats, down_stats)), Some((dense_up, dense_down)))
        }
        _ => (None, None),
    };

    Ok(GpuTimings {
        stages,
        graph,
        cublas_per_expert,
        cublas_dense,
        touched,
        check_error,
    })
}
