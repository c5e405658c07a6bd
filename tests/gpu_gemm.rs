//! The GPU grouped GEMM against the CPU reference on seeded random data, plus its input validation;
//! the FP8- and MXFP4-weight GEMMs against a float64 oracle that decodes the codes itself.
//!
//! The validation and kernel choice ([`plan_grouped_gemm`], a pure function) are tested on every
//! machine. The GPU tests need a device: without one (no kernels built, no driver, no device) each
//! prints `SKIPPED gpu_gemm::<test>: <reason>` and passes, unless `MOE_KERNELS_REQUIRE_GPU=1`, which
//! makes a missing GPU a failure. Outputs are poisoned with NaN before every launch and every element
//! is compared; each case runs twice and must give identical bits. The seed is printed;
//! `MOE_TEST_SEED` replays it.

mod common;

use cudarc::driver::CudaSlice;
use half::{bf16, f16};
use moe_kernels::cpu::activation::activation;
use moe_kernels::cpu::gemm::grouped_gemm as cpu_grouped_gemm;
use moe_kernels::gpu::{
    grouped_gemm, grouped_gemm_biased, grouped_gemm_fp8, grouped_gemm_quant, plan_grouped_gemm,
    Device, Fp8Weights, GemmElement, GemmEpilogue, GemmOutput, GemmRequest, GemmTileConfig,
    GemmWeights, GroupedGemmShape, Mxfp4Weights, QuantWeights,
};
use moe_kernels::quant::CodeFormat;
use moe_kernels::{
    Activation, ActivationKind, DType, Element, ExpertsRef, MatMut, MatRef, MoeError,
};
use rand::rngs::StdRng;
use rand::Rng;

/// The device, or `None` (after printing why) when this machine cannot run the GPU tests.
fn device(test: &str) -> Option<Device> {
    common::gpu("gpu_gemm", test)
}

const SWIGLU: GemmEpilogue = GemmEpilogue::Activation(Activation::SWIGLU);
const GEGLU: GemmEpilogue = GemmEpilogue::Activation(Activation::GEGLU);
const SILU: GemmEpilogue = GemmEpilogue::Activation(Activation {
    kind: ActivationKind::Silu,
    gated: false,
});
const GELU: GemmEpilogue = GemmEpilogue::Activation(Activation {
    kind: ActivationKind::GeluTanh,
    gated: false,
});
const EPILOGUES: [GemmEpilogue; 5] = [GemmEpilogue::Store, SWIGLU, GEGLU, SILU, GELU];

// ---------------------------------------------------------------------------------------------
// Validation and kernel choice: no GPU needed.
// ---------------------------------------------------------------------------------------------

/// A consistent request (right lengths, 256-byte aligned operands) for bf16 inputs and outputs.
fn request(shape: GroupedGemmShape, epilogue: GemmEpilogue) -> GemmRequest {
    GemmRequest {
        input: DType::BF16,
        output: DType::BF16,
        shape,
        epilogue,
        x_len: shape.rows * shape.k,
        w_len: shape.num_experts * shape.n * shape.k,
        bias_len: None,
        offsets_len: Some(shape.num_experts + 1),
        out_len: shape.rows * shape.out_cols(epilogue),
        x_addr: 0x7f00_0000_0000,
        w_addr: 0x7f10_0000_0000,
        sm_count: 132,
        weights: GemmWeights::Input,
    }
}

fn shape(rows: usize, n: usize, k: usize, num_experts: usize) -> GroupedGemmShape {
    GroupedGemmShape {
        rows,
        n,
        k,
        num_experts,
    }
}

#[test]
fn plan_rejects_bad_input_with_typed_errors() {
    let base = request(shape(100, 256, 128, 8), SWIGLU);
    assert!(plan_grouped_gemm(&base).unwrap().is_some());
    let is_shape = |r: Result<_, MoeError>| matches!(r, Err(MoeError::ShapeMismatch { .. }));
    let is_invalid = |r: Result<_, MoeError>| matches!(r, Err(MoeError::InvalidConfig(_)));
    let is_unsupported = |r: Result<_, MoeError>| matches!(r, Err(MoeError::Unsupported(_)));

    assert!(is_shape(plan_grouped_gemm(&GemmRequest {
        x_len: base.x_len - 1,
        ..base
    })));
    assert!(is_shape(plan_grouped_gemm(&GemmRequest {
        w_len: base.w_len + 1,
        ..base
    })));
    assert!(is_shape(plan_grouped_gemm(&GemmRequest {
        offsets_len: Some(8),
        ..base
    })));
    // A gated output is [rows, N/2]; [rows, N] is wrong.
    assert!(is_shape(plan_grouped_gemm(&GemmRequest {
        out_len: 100 * 256,
        ..base
    })));
    let odd = request(shape(100, 255, 128, 8), GemmEpilogue::Store);
    assert!(plan_grouped_gemm(&odd).unwrap().is_some());
    assert!(is_invalid(plan_grouped_gemm(&GemmRequest {
        epilogue: GEGLU,
        out_len: 100 * 127,
        ..odd
    })));
    let mut no_experts = request(shape(100, 256, 128, 0), GemmEpilogue::Store);
    no_experts.offsets_len = Some(1);
    assert!(is_invalid(plan_grouped_gemm(&no_experts)));
    assert!(is_invalid(plan_grouped_gemm(&GemmRequest {
        offsets_len: None,
        ..base
    })));
    let one = request(shape(100, 256, 128, 1), SWIGLU);
    assert!(plan_grouped_gemm(&GemmRequest {
        offsets_len: None,
        ..one
    })
    .unwrap()
    .is_some());

    match plan_grouped_gemm(&GemmRequest {
        input: DType::F32,
        output: DType::F32,
        ..base
    }) {
        Err(MoeError::Unsupported(msg)) => {
            assert!(msg.contains("bf16") && msg.contains("f16"), "{msg}")
        }
        other => panic!("f32 inputs: {other:?}"),
    }
    assert!(is_unsupported(plan_grouped_gemm(&GemmRequest {
        output: DType::F16,
        ..base
    })));
    assert!(plan_grouped_gemm(&GemmRequest {
        output: DType::F32,
        ..base
    })
    .unwrap()
    .is_some());

    // Sizes whose products overflow, and dimensions past the kernels' 32-bit N and K.
    let huge = GemmRequest {
        shape: shape(usize::MAX / 2, 4, 4, 1),
        ..request(shape(1, 4, 4, 1), GemmEpilogue::Store)
    };
    assert!(matches!(
        plan_grouped_gemm(&huge),
        Err(MoeError::SizeOverflow(_))
    ));
    let wide = request(shape(1, 1 << 31, 0, 1), GemmEpilogue::Store);
    assert!(is_unsupported(plan_grouped_gemm(&wide)));
    let deep = request(shape(0, 1, 1 << 31, 1), GemmEpilogue::Store);
    assert!(is_unsupported(plan_grouped_gemm(&deep)));
}

#[test]
fn plan_launches_nothing_for_empty_outputs() {
    for (s, e) in [
        (shape(0, 256, 128, 8), SWIGLU),
        (shape(10, 0, 128, 8), GemmEpilogue::Store),
        (shape(10, 0, 128, 8), SWIGLU),
    ] {
        assert_eq!(plan_grouped_gemm(&request(s, e)).unwrap(), None);
    }
    // Still validated.
    assert!(plan_grouped_gemm(&GemmRequest {
        x_len: 1,
        ..request(shape(0, 256, 128, 8), SWIGLU)
    })
    .is_err());
}

#[test]
fn plan_chooses_tiles_by_rows_per_expert_and_alignment() {
    let tile = |r: GemmRequest| plan_grouped_gemm(&r).unwrap().unwrap().tile;
    // Decode: DeepSeek-V3, one token, 8 of 256 experts.
    assert_eq!(
        tile(request(shape(8, 4096, 7168, 256), SWIGLU)),
        GemmTileConfig::Small
    );
    assert_eq!(
        tile(request(shape(16 * 8, 2048, 1024, 8), GemmEpilogue::Store)),
        GemmTileConfig::Small
    );
    assert_eq!(
        tile(request(shape(4096, 1536, 2048, 128), SWIGLU)),
        GemmTileConfig::Medium
    );
    assert_eq!(
        tile(request(shape(16384, 28672, 4096, 8), SWIGLU)),
        GemmTileConfig::Large
    );
    // Big rows per expert but too few large tiles to fill 132 SMs: medium.
    assert_eq!(
        tile(request(shape(1024, 256, 4096, 1), GemmEpilogue::Store)),
        GemmTileConfig::Medium
    );
    // K % 8 != 0, or a misaligned operand: the generic loader.
    assert_eq!(
        tile(request(shape(4096, 256, 4100, 8), SWIGLU)),
        GemmTileConfig::Generic
    );
    let aligned = request(shape(16384, 28672, 4096, 8), SWIGLU);
    assert_eq!(
        tile(GemmRequest {
            x_addr: aligned.x_addr + 2,
            ..aligned
        }),
        GemmTileConfig::Generic
    );
    assert_eq!(
        tile(GemmRequest {
            w_addr: aligned.w_addr + 8,
            ..aligned
        }),
        GemmTileConfig::Generic
    );

    let plan = plan_grouped_gemm(&GemmRequest {
        output: DType::F32,
        ..request(shape(8, 4096, 7168, 256), SWIGLU)
    })
    .unwrap()
    .unwrap();
    assert_eq!(plan.kernel, "moe_gemm_small_bf16_f32");
    // Row tiles: ceil(8 / 16) + min(256, 8) = 9; column tiles: 2048 outputs / 32 per tile = 64.
    assert_eq!(plan.max_tiles, 9 * 64);
    let f16 = plan_grouped_gemm(&GemmRequest {
        input: DType::F16,
        output: DType::F16,
        ..request(shape(4096, 256, 4100, 8), SWIGLU)
    })
    .unwrap()
    .unwrap();
    assert_eq!(f16.kernel, "moe_gemm_generic_f16_f16");
}

// ---------------------------------------------------------------------------------------------
// The kernels against the CPU reference: needs a GPU.
// ---------------------------------------------------------------------------------------------

/// How the rows are split between experts.
#[derive(Clone, Debug)]
enum Segments {
    /// No offsets: one group of all rows (one expert).
    None,
    /// Offsets from these per-expert row counts; `tail` uncovered rows follow the last segment.
    Counts { counts: Vec<usize>, tail: usize },
}

/// One test case.
#[derive(Clone, Debug)]
struct Case {
    segments: Segments,
    n: usize,
    k: usize,
    epilogue: GemmEpilogue,
    /// Leading elements to skip in the x and w buffers (1: misaligned, the generic path).
    shift: usize,
}

impl Case {
    fn experts(&self) -> usize {
        match &self.segments {
            Segments::None => 1,
            Segments::Counts { counts, .. } => counts.len(),
        }
    }

    fn offsets(&self) -> Option<Vec<i64>> {
        match &self.segments {
            Segments::None => None,
            Segments::Counts { counts, .. } => {
                let mut o = vec![0i64];
                for &c in counts {
                    o.push(o.last().unwrap() + c as i64);
                }
                Some(o)
            }
        }
    }

    /// Rows covered by the segments, and all rows of x and out (covered plus tail).
    fn rows(&self) -> (usize, usize) {
        match &self.segments {
            Segments::None => panic!("rows of a case without offsets are chosen by the caller"),
            Segments::Counts { counts, tail } => {
                let covered = counts.iter().sum::<usize>();
                (covered, covered + tail)
            }
        }
    }
}

/// Per-expert counts: empty experts, and sometimes one hot expert.
fn random_counts(rng: &mut StdRng, e: usize, rows: usize) -> Vec<usize> {
    let mut counts = vec![0usize; e];
    if rng.random_bool(0.25) {
        counts[rng.random_range(0..e)] = rows;
        return counts;
    }
    // Skewed random split with empty experts.
    let weights: Vec<f64> = (0..e)
        .map(|_| {
            if rng.random_bool(0.3) {
                0.0
            } else {
                rng.random_range(0.0..1.0f64).powi(2)
            }
        })
        .collect();
    let total: f64 = weights.iter().sum::<f64>().max(1e-9);
    let mut left = rows;
    for (c, w) in counts.iter_mut().zip(&weights) {
        *c = ((w / total) * rows as f64).floor() as usize;
        *c = (*c).min(left);
        left -= *c;
    }
    let last = rng.random_range(0..e);
    counts[last] += left;
    counts
}

/// Upload, poison the output with NaN, launch, download.
#[allow(clippy::too_many_arguments)]
fn run_gpu<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    x: &[T],
    offsets: Option<&[i64]>,
    w: &[T],
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
    shift: usize,
) -> Result<Vec<O>, MoeError> {
    let stream = dev.stream();
    let pad = |v: &[T]| -> Vec<T> {
        let mut p = vec![T::from_f32(0.0); shift];
        p.extend_from_slice(v);
        p
    };
    let x_dev: CudaSlice<T> = stream.clone_htod(&pad(x))?;
    let w_dev: CudaSlice<T> = stream.clone_htod(&pad(w))?;
    let offsets_dev = offsets.map(|o| stream.clone_htod(o)).transpose()?;
    let out_len = shape.rows * shape.out_cols(epilogue);
    let mut out: CudaSlice<O> = stream.clone_htod(&vec![O::from_f32(f32::NAN); out_len])?;
    let offsets_view = offsets_dev.as_ref().map(|o| o.as_view());
    grouped_gemm::<T, O>(
        dev,
        &x_dev.slice(shift..),
        offsets_view.as_ref(),
        &w_dev.slice(shift..),
        shape,
        epilogue,
        &mut out.as_view_mut(),
    )?;
    Ok(stream.clone_dtoh(&out)?)
}

/// The CPU reference: the grouped GEMM in f32, then the activation, rounded once to `O`.
fn run_cpu<T: Element, O: Element>(
    x: &[T],
    offsets: &[usize],
    w: &[T],
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
) -> Vec<O> {
    let GroupedGemmShape {
        rows,
        n,
        k,
        num_experts,
    } = shape;
    let x = MatRef::new("x", x, rows, k).unwrap();
    let w = ExpertsRef::new("w", w, num_experts, n, k).unwrap();
    let cols = shape.out_cols(epilogue);
    let mut out = vec![O::from_f32(f32::NAN); rows * cols];
    match epilogue {
        GemmEpilogue::Store => {
            cpu_grouped_gemm(
                x,
                offsets,
                w,
                &mut MatMut::new("out", &mut out, rows, cols).unwrap(),
            )
            .unwrap();
        }
        GemmEpilogue::Activation(act) => {
            let mut acc = vec![0f32; rows * n];
            cpu_grouped_gemm(
                x,
                offsets,
                w,
                &mut MatMut::new("acc", &mut acc, rows, n).unwrap(),
            )
            .unwrap();
            activation(
                act,
                MatRef::new("acc", &acc, rows, n).unwrap(),
                &mut MatMut::new("out", &mut out, rows, cols).unwrap(),
            )
            .unwrap();
        }
    }
    out
}

/// Per-element relative tolerance of an output type (one or two units in the last place of the
/// rounded output, or f32 summation-order differences), and the relative L2 bound.
fn tolerances(output: DType) -> (f64, f64) {
    match output {
        DType::BF16 => (1.6e-2, 1e-2),
        DType::F16 => (2.5e-3, 2e-3),
        DType::F32 => (1e-4, 1e-5),
    }
}

/// Run one case for element type `T` and output `O`: GPU twice (identical bits), CPU reference,
/// every covered element compared, every uncovered row left untouched (still NaN).
fn check_case<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    rng: &mut StdRng,
    case: &Case,
    rows_without_offsets: usize,
) {
    let e = case.experts();
    let (covered, rows) = match case.segments {
        Segments::None => (rows_without_offsets, rows_without_offsets),
        _ => case.rows(),
    };
    let (n, k) = (case.n, case.k);
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    let what = format!(
        "{case:?}, rows {rows}, {} -> {}",
        T::DTYPE.name(),
        O::DTYPE.name()
    );
    let x: Vec<T> = common::randn(rng, rows * k, 1.0)
        .into_iter()
        .map(T::from_f32)
        .collect();
    let w: Vec<T> = common::randn(rng, e * n * k, 1.0 / (k.max(1) as f32).sqrt())
        .into_iter()
        .map(T::from_f32)
        .collect();
    let offsets = case.offsets();

    let first: Vec<O> = run_gpu(
        dev,
        &x,
        offsets.as_deref(),
        &w,
        shape,
        case.epilogue,
        case.shift,
    )
    .unwrap_or_else(|err| panic!("{what}: GPU grouped GEMM failed: {err}"));
    let second: Vec<O> = run_gpu(
        dev,
        &x,
        offsets.as_deref(),
        &w,
        shape,
        case.epilogue,
        case.shift,
    )
    .unwrap_or_else(|err| panic!("{what}: second GPU run failed: {err}"));
    let bits = |v: &[O]| -> Vec<u32> { v.iter().map(|x| x.to_f32().to_bits()).collect() };
    assert!(
        bits(&first) == bits(&second),
        "{what}: repeated runs differ"
    );

    // The CPU reference covers the segments; the tail rows must stay untouched.
    let cpu_offsets: Vec<usize> = match &offsets {
        Some(o) => o.iter().map(|&v| v as usize).collect(),
        None => vec![0, rows],
    };
    let cols = shape.out_cols(case.epilogue);
    let want: Vec<O> = run_cpu(
        &x[..covered * k],
        &cpu_offsets,
        &w,
        GroupedGemmShape {
            rows: covered,
            ..shape
        },
        case.epilogue,
    );
    check_output(
        &what,
        &first,
        covered,
        cols,
        &common::el64(&want),
        "CPU reference",
    );
}

/// `out` `[rows, cols]` against `want` for its first `covered` rows (every element within the
/// output type's tolerance of `want`'s name, and the relative L2 bound), and the rows past them
/// untouched (still the NaN poison).
fn check_output<O: Element>(
    what: &str,
    out: &[O],
    covered: usize,
    cols: usize,
    want: &[f64],
    name: &str,
) {
    let got = common::el64(&out[..covered * cols]);
    let (rtol, l2_tol) = tolerances(O::DTYPE);
    let rms = (want.iter().map(|v| v * v).sum::<f64>() / want.len().max(1) as f64).sqrt();
    for (i, (&g, &r)) in got.iter().zip(want).enumerate() {
        assert!(
            g.is_finite() && (g - r).abs() <= rtol * (r.abs() + rms),
            "{what}: element ({}, {}) is {g}, {name} {r}",
            i / cols,
            i % cols
        );
    }
    common::assert_close(what, &got, want, l2_tol);
    for (i, v) in out[covered * cols..].iter().enumerate() {
        assert!(
            v.to_f32().is_nan(),
            "{what}: uncovered row {} was written",
            covered + i / cols
        );
    }
}

/// Run `case` with a random choice of input type and output type.
fn check_random_types(dev: &Device, rng: &mut StdRng, case: &Case, rows: usize) {
    match rng.random_range(0..4) {
        0 => check_case::<bf16, bf16>(dev, rng, case, rows),
        1 => check_case::<bf16, f32>(dev, rng, case, rows),
        2 => check_case::<f16, f16>(dev, rng, case, rows),
        _ => check_case::<f16, f32>(dev, rng, case, rows),
    }
}

fn counts_case(rng: &mut StdRng, e: usize, rows: usize, n: usize, k: usize) -> Case {
    Case {
        segments: Segments::Counts {
            counts: random_counts(rng, e, rows),
            tail: 0,
        },
        n,
        k,
        epilogue: EPILOGUES[rng.random_range(0..EPILOGUES.len())],
        shift: 0,
    }
}

#[test]
fn every_epilogue_and_type_pair_matches_the_cpu_reference() {
    let Some(dev) = device("every_epilogue_and_type_pair_matches_the_cpu_reference") else {
        return;
    };
    let mut rng = common::rng("every_epilogue_and_type_pair");
    for epilogue in EPILOGUES {
        for (e, rows) in [(8usize, 8usize), (8, 300), (8, 1500)] {
            let case = Case {
                epilogue,
                ..counts_case(&mut rng, e, rows, 192, 136)
            };
            check_case::<bf16, bf16>(&dev, &mut rng, &case, 0);
            check_case::<bf16, f32>(&dev, &mut rng, &case, 0);
            check_case::<f16, f16>(&dev, &mut rng, &case, 0);
            check_case::<f16, f32>(&dev, &mut rng, &case, 0);
        }
    }
}

#[test]
fn decode_shapes_match_the_cpu_reference() {
    let Some(dev) = device("decode_shapes_match_the_cpu_reference") else {
        return;
    };
    let mut rng = common::rng("decode_shapes");
    // (experts, rows = tokens * k, n, k): Mixtral, Qwen3, DeepSeek-V3-like routed experts (weights
    // scaled down where the full ones would make the CPU reference slow), 1 to 16 rows per expert.
    for (e, rows, n, k) in [
        (8usize, 2usize, 2 * 1792, 1024usize),
        (8, 16, 1024, 1792),
        (8, 8, 128, 7168),
        (128, 8, 2 * 96, 1024),
        (128, 64, 2048, 96),
        (256, 8, 2 * 32, 1024),
        (256, 128, 1024, 64),
        (60, 4, 2 * 352, 512),
    ] {
        for epilogue in [SWIGLU, GemmEpilogue::Store] {
            let case = Case {
                epilogue,
                ..counts_case(&mut rng, e, rows, n, k)
            };
            check_random_types(&dev, &mut rng, &case, 0);
        }
    }
}

#[test]
fn prefill_and_odd_shapes_match_the_cpu_reference() {
    let Some(dev) = device("prefill_and_odd_shapes_match_the_cpu_reference") else {
        return;
    };
    let mut rng = common::rng("prefill_and_odd_shapes");
    for (e, rows, n, k) in [
        (1usize, 16384usize, 256usize, 128usize),
        (8, 16384, 128, 256),
        (8, 4097, 2 * 200, 264),
        (60, 5000, 2 * 88, 192),
        (128, 3000, 96, 256),
        (256, 2048, 64, 520),
        (8, 777, 7168, 64),
        (8, 513, 72, 7168),
        (1, 1, 64, 64),
        (1, 7, 130, 72),
        (3, 33, 66, 1000),
    ] {
        let case = counts_case(&mut rng, e, rows, n, k);
        let case = if case.epilogue.is_gated() && n % 2 != 0 {
            Case {
                epilogue: GemmEpilogue::Store,
                ..case
            }
        } else {
            case
        };
        check_random_types(&dev, &mut rng, &case, 0);
    }
}

#[test]
fn unaligned_operands_take_the_generic_path() {
    let Some(dev) = device("unaligned_operands_take_the_generic_path") else {
        return;
    };
    let mut rng = common::rng("unaligned_operands");
    for (e, rows, n, k, shift) in [
        (8usize, 300usize, 130usize, 129usize, 0usize),
        (8, 40, 64, 7, 0),
        (60, 500, 2 * 100, 1001, 0),
        (8, 300, 192, 256, 1),
        (1, 5, 64, 3, 1),
    ] {
        let case = Case {
            shift,
            ..counts_case(&mut rng, e, rows, n, k)
        };
        check_random_types(&dev, &mut rng, &case, 0);
    }
}

#[test]
fn one_group_without_offsets() {
    let Some(dev) = device("one_group_without_offsets") else {
        return;
    };
    let mut rng = common::rng("one_group_without_offsets");
    // The router-logits shape (f32 output) and the shared-expert shapes.
    for (rows, n, k, epilogue) in [
        (1usize, 256usize, 7168usize, GemmEpilogue::Store),
        (1000, 60, 2048, GemmEpilogue::Store),
        (17, 2 * 512, 2048, SWIGLU),
        (300, 2048, 512, GemmEpilogue::Store),
        (4096, 99, 64, GELU),
    ] {
        let case = Case {
            segments: Segments::None,
            n,
            k,
            epilogue,
            shift: 0,
        };
        check_case::<bf16, f32>(&dev, &mut rng, &case, rows);
        check_case::<bf16, bf16>(&dev, &mut rng, &case, rows);
    }
}

#[test]
fn padded_segments_and_uncovered_rows() {
    let Some(dev) = device("padded_segments_and_uncovered_rows") else {
        return;
    };
    let mut rng = common::rng("padded_segments_and_uncovered_rows");
    // Segments padded to a block size, a workspace larger than the rows used (uncovered tail), and
    // every expert empty (nothing written at all).
    for (e, counts_rows, tail, pad) in [
        (8usize, 100usize, 37usize, 16usize),
        (64, 1000, 500, 64),
        (256, 8, 256 * 15, 16),
        (8, 0, 50, 1),
    ] {
        let mut counts = random_counts(&mut rng, e, counts_rows);
        counts.iter_mut().for_each(|c| *c = c.div_ceil(pad) * pad);
        let case = Case {
            segments: Segments::Counts { counts, tail },
            n: 2 * 160,
            k: 256,
            epilogue: SWIGLU,
            shift: 0,
        };
        check_random_types(&dev, &mut rng, &case, 0);
    }
}

#[test]
fn garbage_offsets_stay_in_bounds() {
    let Some(dev) = device("garbage_offsets_stay_in_bounds") else {
        return;
    };
    let mut rng = common::rng("garbage_offsets_stay_in_bounds");
    let (e, rows, n, k) = (16usize, 200usize, 64usize, 64usize);
    for _ in 0..20 {
        let offsets: Vec<i64> = (0..=e)
            .map(|_| match rng.random_range(0..4) {
                0 => [i64::MIN, i64::MAX, -1, rows as i64 + 1][rng.random_range(0..4)],
                1 => rng.random_range(-300..300),
                _ => rng.random_range(0..=rows as i64),
            })
            .collect();
        let x: Vec<bf16> = common::randn(&mut rng, rows * k, 1.0)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let w: Vec<bf16> = common::randn(&mut rng, e * n * k, 0.125)
            .into_iter()
            .map(bf16::from_f32)
            .collect();
        let shape = GroupedGemmShape {
            rows,
            n,
            k,
            num_experts: e,
        };
        let got: Vec<f32> =
            run_gpu::<bf16, f32>(&dev, &x, Some(&offsets), &w, shape, GemmEpilogue::Store, 0)
                .unwrap_or_else(|err| panic!("offsets {offsets:?}: {err}"));
        // The documented segments (running maximum of the clamped offsets), computed in f64; rows
        // outside every segment stay NaN.
        let clamp = |o: i64| o.clamp(0, rows as i64) as usize;
        let mut begin = clamp(offsets[0]);
        let mut owner = vec![None; rows];
        for (ex, &o) in offsets[1..].iter().enumerate() {
            let end = begin.max(clamp(o));
            owner[begin..end].iter_mut().for_each(|r| *r = Some(ex));
            begin = end;
        }
        for (r, owner) in owner.iter().enumerate() {
            for c in 0..n {
                let g = got[r * n + c] as f64;
                match owner {
                    None => assert!(g.is_nan(), "offsets {offsets:?}: row {r} written"),
                    Some(ex) => {
                        let want: f64 = (0..k)
                            .map(|i| x[r * k + i].to_f64() * w[(ex * n + c) * k + i].to_f64())
                            .sum();
                        assert!(
                            (g - want).abs() <= 1e-4 * (1.0 + want.abs()),
                            "offsets {offsets:?}: ({r}, {c}) is {g}, want {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bad_buffers_are_rejected_before_launch() {
    let Some(dev) = device("bad_buffers_are_rejected_before_launch") else {
        return;
    };
    let stream = dev.stream();
    let (rows, n, k, e) = (10usize, 64usize, 32usize, 4usize);
    let x = stream.clone_htod(&vec![bf16::ONE; rows * k]).unwrap();
    let w = stream.clone_htod(&vec![bf16::ONE; e * n * k]).unwrap();
    let offsets = stream.clone_htod(&[0i64, 3, 3, 7, 10]).unwrap();
    let mut out = stream.clone_htod(&vec![f32::NAN; rows * n]).unwrap();
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    let mut run = |shape: GroupedGemmShape, x_len: usize, offsets_len: usize, epilogue| {
        grouped_gemm::<bf16, f32>(
            &dev,
            &x.slice(..x_len),
            Some(&offsets.slice(..offsets_len)),
            &w.as_view(),
            shape,
            epilogue,
            &mut out.as_view_mut(),
        )
    };
    assert!(matches!(
        run(shape, rows * k - 1, e + 1, GemmEpilogue::Store),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        run(shape, rows * k, e, GemmEpilogue::Store),
        Err(MoeError::ShapeMismatch { .. })
    ));
    // Gated output is [rows, n/2]: this one is [rows, n].
    assert!(matches!(
        run(shape, rows * k, e + 1, SWIGLU),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        run(GroupedGemmShape { n: 63, ..shape }, rows * k, e + 1, SWIGLU),
        Err(MoeError::InvalidConfig(_))
    ));
    // The rejected calls enqueued nothing.
    let untouched = stream.clone_dtoh(&out).unwrap();
    assert!(untouched.iter().all(|v| v.is_nan()));
    grouped_gemm::<bf16, f32>(
        &dev,
        &x.as_view(),
        Some(&offsets.as_view()),
        &w.as_view(),
        shape,
        GemmEpilogue::Store,
        &mut out.as_view_mut(),
    )
    .unwrap();
    // All-ones operands: every covered element is exactly K.
    let got = stream.clone_dtoh(&out).unwrap();
    assert!(got.iter().all(|v| *v == k as f32), "{:?}", &got[..8]);
}

/// Small cases that run every kernel variant (small, medium, large and generic tiles; gated and
/// plain epilogues; offsets with empty experts, none, and garbage), quick enough for
/// compute-sanitizer's memcheck, racecheck, synccheck and initcheck (scripts/gpu-check.sh).
#[test]
fn sanitizer_smoke() {
    let Some(dev) = device("sanitizer_smoke") else {
        return;
    };
    let mut rng = common::rng("sanitizer_smoke");
    let sm_count = dev
        .context()
        .attribute(
            cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT,
        )
        .unwrap() as usize;
    let cases = [
        (
            GemmTileConfig::Small,
            8usize,
            8usize,
            2 * 64usize,
            64usize,
            SWIGLU,
        ),
        (GemmTileConfig::Medium, 8, 300, 256, 96, GemmEpilogue::Store),
        (GemmTileConfig::Large, 2, 1024, 2 * 4096, 64, GEGLU),
        (GemmTileConfig::Generic, 8, 100, 96, 33, SILU),
    ];
    for (tile, e, rows, n, k, epilogue) in cases {
        let case = Case {
            epilogue,
            ..counts_case(&mut rng, e, rows, n, k)
        };
        let shape = GroupedGemmShape {
            rows,
            n,
            k,
            num_experts: e,
        };
        let plan = plan_grouped_gemm(&GemmRequest {
            sm_count,
            ..request(shape, epilogue)
        })
        .unwrap()
        .unwrap();
        assert_eq!(
            plan.tile, tile,
            "{case:?} must exercise the {tile:?} kernel"
        );
        check_case::<bf16, bf16>(&dev, &mut rng, &case, 0);
    }
    let none = Case {
        segments: Segments::None,
        n: 72,
        k: 40,
        epilogue: GemmEpilogue::Store,
        shift: 0,
    };
    check_case::<f16, f32>(&dev, &mut rng, &none, 50);
    // Garbage offsets: in bounds, whatever they hold.
    let (e, rows, n, k) = (4usize, 40usize, 64usize, 32usize);
    let x = vec![bf16::ONE; rows * k];
    let w = vec![bf16::ONE; e * n * k];
    let offsets = [-5i64, 30, 10, i64::MAX, 7];
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    let got: Vec<f32> =
        run_gpu::<bf16, f32>(&dev, &x, Some(&offsets), &w, shape, GemmEpilogue::Store, 0).unwrap();
    // Segments [0, 30), [30, 30), [30, 40), [40, 40): rows 0..40 hold K.
    assert!(got.iter().all(|&v| v == k as f32));
}

// ---------------------------------------------------------------------------------------------
// FP8 e4m3 weights with per-row group scales.
// ---------------------------------------------------------------------------------------------

#[test]
fn fp8_plan_checks_the_scales() {
    let s = shape(100, 256, 300, 8);
    let fp8 = |group: usize, scales_len: usize| GemmRequest {
        weights: GemmWeights::Fp8E4M3 { group, scales_len },
        ..request(s, SWIGLU)
    };
    // [E, N, ceil(K / group)]: 3 groups of 128 for K = 300, a partial last one.
    let plan = plan_grouped_gemm(&fp8(128, 8 * 256 * 3)).unwrap().unwrap();
    assert!(plan.kernel.contains("_e4m3_bf16_bf16"), "{}", plan.kernel);
    let unaligned = plan_grouped_gemm(&GemmRequest {
        w_addr: 0x7f10_0000_0008,
        ..fp8(128, 8 * 256 * 3)
    });
    assert_eq!(unaligned.unwrap().unwrap().tile, GemmTileConfig::Generic);
    assert!(matches!(
        plan_grouped_gemm(&fp8(128, 8 * 256 * 3 - 1)),
        Err(MoeError::ShapeMismatch { .. })
    ));
    assert!(matches!(
        plan_grouped_gemm(&fp8(0, 0)),
        Err(MoeError::InvalidConfig(_))
    ));
    // A group wider than K is one scale per row.
    assert!(plan_grouped_gemm(&fp8(1 << 40, 8 * 256)).unwrap().is_some());
}

/// A random e4m3 code that is not NaN: mostly magnitudes of 1/16 to 8, sometimes any code (zeros,
/// subnormals, 448).
fn random_code(rng: &mut StdRng) -> u8 {
    loop {
        let code: u8 = if rng.random_bool(0.1) {
            rng.random()
        } else {
            let exponent: u8 = rng.random_range(3..=10);
            (u8::from(rng.random_bool(0.5)) << 7) | (exponent << 3) | rng.random_range(0..8u8)
        };
        if code & 0x7f != 0x7f {
            return code;
        }
    }
}

/// The float64 oracle of the quantized GEMMs: every weight decoded and scaled by `weight(row, c)`
/// (exact in f64, `row = e * N + r`), the product rounded to f32 and then to `T` (the documented
/// contract of the kernels), the rows of each segment times their expert's weights in f64, then the
/// epilogue. `[covered rows, out_cols]`.
fn quant_oracle<T: Element>(
    x: &[T],
    offsets: &[usize],
    weight: impl Fn(usize, usize) -> f64,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
) -> Vec<f64> {
    let (n, k) = (shape.n, shape.k);
    let cols = shape.out_cols(epilogue);
    let mut out = vec![];
    for e in 0..offsets.len() - 1 {
        // Expert e's weights, dequantised and rounded once.
        let w: Vec<f64> = (0..n * k)
            .map(|i| T::from_f32(weight(e * n + i / k, i % k) as f32).to_f32() as f64)
            .collect();
        for r in offsets[e]..offsets[e + 1] {
            let acc: Vec<f64> = (0..n)
                .map(|j| {
                    (0..k)
                        .map(|c| x[r * k + c].to_f32() as f64 * w[j * k + c])
                        .sum()
                })
                .collect();
            match epilogue {
                GemmEpilogue::Store => out.extend(acc),
                GemmEpilogue::Activation(a) => {
                    let f = |v: f64| match a.kind {
                        ActivationKind::GeluTanh => common::oracle::gelu_tanh(v),
                        _ => common::oracle::silu(v),
                    };
                    if a.gated {
                        out.extend(
                            (0..cols).map(|j| common::oracle::gated(a.kind, acc[j], acc[cols + j])),
                        );
                    } else {
                        out.extend(acc.into_iter().map(f));
                    }
                }
            }
        }
    }
    out
}

/// Quantized weights of a case on the host: FP8 codes `[E, N, K]` with f32 scales, or MXFP4 codes
/// `[E, N, ceil(K / 2)]` bytes with e8m0 scale bytes; scales `[E, N, ceil(K / group)]`.
enum HostQuant {
    Fp8 { codes: Vec<u8>, scales: Vec<f32> },
    Mxfp4 { codes: Vec<u8>, scales: Vec<u8> },
}

impl HostQuant {
    /// Random weights of `format` for `[e, n, k]` in groups of `group` columns.
    fn random(rng: &mut StdRng, format: CodeFormat, [e, n, k]: [usize; 3], group: usize) -> Self {
        let groups = e * n * k.div_ceil(group);
        match format {
            CodeFormat::Fp8E4M3 => HostQuant::Fp8 {
                codes: (0..e * n * k).map(|_| random_code(rng)).collect(),
                // Typical |code| is about 1; a scale of about 1/sqrt(K), varying by a factor of 4
                // across groups.
                scales: (0..groups)
                    .map(|_| 2f32.powf(rng.random_range(-1.0..1.0)) / (k as f32).sqrt())
                    .collect(),
            },
            CodeFormat::Mxfp4E2M1 => {
                // Every code (random bytes); typical |e2m1| is about 2, so scales of 2^-1 to 2^-4
                // over sqrt(K) (a factor of 8 across groups).
                let base = 127 - (k as f64).sqrt().log2().round() as i32;
                HostQuant::Mxfp4 {
                    codes: (0..e * n * k.div_ceil(2)).map(|_| rng.random()).collect(),
                    scales: (0..groups)
                        .map(|_| (base - rng.random_range(1..=4)) as u8)
                        .collect(),
                }
            }
        }
    }

    /// The exact value of weight `[row, c]` (`row = e * N + r`), decoded by the test's own oracle.
    fn weight(&self, k: usize, group: usize, row: usize, c: usize) -> f64 {
        let scale = row * k.div_ceil(group) + c / group;
        match self {
            HostQuant::Fp8 { codes, scales } => {
                common::oracle::e4m3(codes[row * k + c]) * scales[scale] as f64
            }
            HostQuant::Mxfp4 { codes, scales } => {
                let byte = codes[row * k.div_ceil(2) + c / 2];
                let nibble = if c.is_multiple_of(2) {
                    byte & 0xf
                } else {
                    byte >> 4
                };
                common::oracle::e2m1(nibble) * common::oracle::e8m0(scales[scale])
            }
        }
    }
}

/// One quantized case: random codes and scales of `format` (groups of `group` columns), the GPU
/// twice (identical bits), every covered element against the oracle, uncovered rows untouched.
fn check_quant_case<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    rng: &mut StdRng,
    case: &Case,
    format: CodeFormat,
    group: usize,
) {
    let e = case.experts();
    let (covered, rows) = case.rows();
    let (n, k) = (case.n, case.k);
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    let what = format!(
        "{} {case:?}, group {group}, rows {rows}, {} -> {}",
        format.name(),
        T::DTYPE.name(),
        O::DTYPE.name()
    );
    let x: Vec<T> = common::values(rng, rows * k, 1.0);
    let weights = HostQuant::random(rng, format, [e, n, k], group);
    let offsets = case.offsets().expect("quantized cases have offsets");

    let stream = dev.stream();
    let run = || -> Result<Vec<O>, MoeError> {
        let shifted = |codes: &[u8]| {
            let mut padded = vec![0u8; case.shift];
            padded.extend_from_slice(codes);
            stream.clone_htod(&padded)
        };
        let x_dev = stream.clone_htod(&x)?;
        let offsets_dev = stream.clone_htod(&offsets)?;
        let cols = shape.out_cols(case.epilogue);
        let mut out: CudaSlice<O> = stream.clone_htod(&vec![O::from_f32(f32::NAN); rows * cols])?;
        let (x_view, offsets_view) = (x_dev.as_view(), offsets_dev.as_view());
        let mut out_view = out.as_view_mut();
        match &weights {
            HostQuant::Fp8 { codes, scales } => {
                let (codes_dev, scales_dev) = (shifted(codes)?, stream.clone_htod(scales)?);
                let codes_view = codes_dev.slice(case.shift..);
                let w = Fp8Weights {
                    codes: &codes_view,
                    scales: &scales_dev.as_view(),
                    group,
                };
                grouped_gemm_fp8::<T, O>(
                    dev,
                    &x_view,
                    Some(&offsets_view),
                    w,
                    shape,
                    case.epilogue,
                    &mut out_view,
                )?;
            }
            HostQuant::Mxfp4 { codes, scales } => {
                let (codes_dev, scales_dev) = (shifted(codes)?, stream.clone_htod(scales)?);
                let codes_view = codes_dev.slice(case.shift..);
                let w = QuantWeights::Mxfp4E2M1(Mxfp4Weights {
                    codes: &codes_view,
                    scales: &scales_dev.as_view(),
                    group,
                });
                grouped_gemm_quant::<T, O>(
                    dev,
                    &x_view,
                    Some(&offsets_view),
                    w,
                    shape,
                    case.epilogue,
                    &mut out_view,
                )?;
            }
        }
        Ok(stream.clone_dtoh(&out)?)
    };
    let first = run().unwrap_or_else(|err| panic!("{what}: GPU quantized GEMM failed: {err}"));
    let second = run().unwrap_or_else(|err| panic!("{what}: second GPU run failed: {err}"));
    let bits = |v: &[O]| -> Vec<u32> { v.iter().map(|x| x.to_f32().to_bits()).collect() };
    assert!(
        bits(&first) == bits(&second),
        "{what}: repeated runs differ"
    );

    let cpu_offsets: Vec<usize> = offsets.iter().map(|&v| v as usize).collect();
    let weight = |row: usize, c: usize| weights.weight(k, group, row, c);
    let want = quant_oracle(&x, &cpu_offsets, weight, shape, case.epilogue);
    let cols = shape.out_cols(case.epilogue);
    check_output(&what, &first, covered, cols, &want, "oracle");
}

#[test]
fn fp8_weights_match_the_float64_oracle() {
    let Some(dev) = device("fp8_weights_match_the_float64_oracle") else {
        return;
    };
    let mut rng = common::rng("fp8_weights");
    // (experts, rows, N, K, group, shift): block scales of 128 with a partial edge block, per-channel
    // (group >= K), small and odd groups that split the loader's 8-column chunks, K not a multiple
    // of 8 and misaligned codes (the generic loader), decode (small tile), medium and large tiles.
    for (i, &(e, rows, n, k, group, shift)) in [
        (8usize, 16usize, 2 * 64, 320usize, 128usize, 0usize),
        (8, 8, 2 * 96, 256, 1 << 20, 0),
        (4, 300, 128, 136, 16, 0),
        (4, 40, 2 * 40, 100, 7, 0),
        (3, 20, 64, 64, 1, 0),
        (16, 24, 2 * 48, 200, 128, 1),
        (1, 600, 256, 128, 128, 0),
        (6, 30, 2 * 24, 9, 4, 0),
    ]
    .iter()
    .enumerate()
    {
        let mut case = counts_case(&mut rng, e, rows, n, k);
        case.shift = shift;
        if let Segments::Counts { tail, .. } = &mut case.segments {
            *tail = i % 3;
        }
        check_quant_types(&dev, &mut rng, &case, CodeFormat::Fp8E4M3, group, i);
    }
}

// ---------------------------------------------------------------------------------------------
// gpt-oss's epilogue: per-expert biases and the clamped SwiGLU.
// ---------------------------------------------------------------------------------------------

/// gpt-oss's clamped SwiGLU (alpha 1.702, limit 7).
const CLAMPED: GemmEpilogue = GemmEpilogue::Activation(Activation {
    kind: ActivationKind::ClampedSilu {
        alpha: 1.702,
        limit: 7.0,
    },
    gated: true,
});

/// The float64 oracle of a biased grouped GEMM: for each row of expert e, `acc = x @ w[e]^T +
/// bias[e]` in float64 (from the rounded inputs), then the epilogue from its definition. Also
/// returns how often the clamped SwiGLU clamped: gates above the limit, ups above it, ups below
/// minus it.
fn biased_oracle<T: Element>(
    x: &[T],
    offsets: &[i64],
    w: &[T],
    bias: Option<&[f32]>,
    shape: GroupedGemmShape,
    epilogue: GemmEpilogue,
) -> (Vec<f64>, [usize; 3]) {
    let (n, k) = (shape.n, shape.k);
    let cols = shape.out_cols(epilogue);
    let mut out = vec![0f64; offsets[shape.num_experts] as usize * cols];
    let mut acc = vec![0f64; n];
    let mut clamped = [0usize; 3];
    for e in 0..shape.num_experts {
        for r in offsets[e] as usize..offsets[e + 1] as usize {
            for (c, a) in acc.iter_mut().enumerate() {
                let wrow = &w[(e * n + c) * k..(e * n + c + 1) * k];
                *a = x[r * k..(r + 1) * k]
                    .iter()
                    .zip(wrow)
                    .map(|(a, b)| a.to_f32() as f64 * b.to_f32() as f64)
                    .sum::<f64>()
                    + bias.map_or(0.0, |b| b[e * n + c] as f64);
            }
            let orow = &mut out[r * cols..(r + 1) * cols];
            match epilogue {
                GemmEpilogue::Store => orow.copy_from_slice(&acc),
                GemmEpilogue::Activation(Activation {
                    kind: ActivationKind::ClampedSilu { alpha, limit },
                    gated: true,
                }) => {
                    let (alpha, limit) = (alpha as f64, limit as f64);
                    for (c, o) in orow.iter_mut().enumerate() {
                        clamped[0] += usize::from(acc[c] > limit);
                        clamped[1] += usize::from(acc[cols + c] > limit);
                        clamped[2] += usize::from(acc[cols + c] < -limit);
                        let g = acc[c].min(limit);
                        let u = acc[cols + c].clamp(-limit, limit);
                        *o = (u + 1.0) * g / (1.0 + (-alpha * g).exp());
                    }
                }
                GemmEpilogue::Activation(Activation {
                    kind: ActivationKind::Silu,
                    gated: true,
                }) => {
                    for (c, o) in orow.iter_mut().enumerate() {
                        let g = acc[c];
                        *o = acc[cols + c] * g / (1.0 + (-g).exp());
                    }
                }
                other => panic!("no oracle for {other:?}"),
            }
        }
    }
    (out, clamped)
}

/// One biased case for inputs `T` and output `O`: the values are scaled so that gate and up
/// projections often pass the clamp (|acc| up to about 15 against limit 7) in both directions.
fn check_biased_case<T: GemmElement, O: GemmOutput<T>>(
    dev: &Device,
    rng: &mut StdRng,
    counts: &[usize],
    n: usize,
    k: usize,
    epilogue: GemmEpilogue,
    biased: bool,
) {
    let e = counts.len();
    let mut offsets = vec![0i64];
    for &c in counts {
        offsets.push(offsets.last().unwrap() + c as i64);
    }
    let rows = offsets[e] as usize;
    let shape = GroupedGemmShape {
        rows,
        n,
        k,
        num_experts: e,
    };
    let what = format!(
        "biased {biased} {epilogue:?}, counts {counts:?}, n {n}, k {k}, {} -> {}",
        T::DTYPE.name(),
        O::DTYPE.name()
    );
    let x: Vec<T> = common::values(rng, rows * k, 4.0);
    let w: Vec<T> = common::values(rng, e * n * k, 1.0 / (k as f32).sqrt());
    let bias = biased.then(|| common::randn(rng, e * n, 3.0));
    let stream = dev.stream();
    let x_dev = stream.clone_htod(&x).unwrap();
    let w_dev = stream.clone_htod(&w).unwrap();
    let offsets_dev = stream.clone_htod(&offsets).unwrap();
    let bias_dev = bias.as_ref().map(|b| stream.clone_htod(b).unwrap());
    let cols = shape.out_cols(epilogue);
    let mut out: CudaSlice<O> = stream
        .clone_htod(&vec![O::from_f32(f32::NAN); rows * cols])
        .unwrap();
    let (xv, wv, ov) = (x_dev.as_view(), w_dev.as_view(), offsets_dev.as_view());
    match &bias_dev {
        Some(b) => grouped_gemm_biased::<T, O>(
            dev,
            &xv,
            Some(&ov),
            &wv,
            &b.as_view(),
            shape,
            epilogue,
            &mut out.as_view_mut(),
        ),
        None => grouped_gemm::<T, O>(
            dev,
            &xv,
            Some(&ov),
            &wv,
            shape,
            epilogue,
            &mut out.as_view_mut(),
        ),
    }
    .unwrap_or_else(|err| panic!("{what}: GPU grouped GEMM failed: {err}"));
    let got: Vec<O> = stream.clone_dtoh(&out).unwrap();
    let (want, clamped) = biased_oracle(&x, &offsets, &w, bias.as_deref(), shape, epilogue);
    if epilogue == CLAMPED {
        assert!(
            clamped.iter().all(|&c| c > 0),
            "{what}: the data must pass every side of the clamp, got {clamped:?}"
        );
    }
    check_output(&what, &got, rows, cols, &want, "float64 oracle");
}

#[test]
fn biases_and_the_clamped_swiglu_match_the_float64_oracle() {
    let Some(dev) = device("biases_and_the_clamped_swiglu_match_the_float64_oracle") else {
        return;
    };
    let mut rng = common::rng("biases_and_the_clamped_swiglu");
    // Decode (small tile), a few dozen rows per expert (medium), and a prefill-like one expert
    // with many rows (large tile where the device has few SMs), each with an empty expert.
    let cases: [(Vec<usize>, usize, usize); 3] = [
        (vec![3, 0, 5, 1], 2 * 72, 64),
        (vec![40, 0, 25], 2 * 96, 136),
        (vec![600, 0], 2 * 64, 72),
    ];
    for (counts, n, k) in &cases {
        for (epilogue, biased) in [
            (CLAMPED, true),
            (CLAMPED, false),
            (SWIGLU, true),
            (GemmEpilogue::Store, true),
        ] {
            check_biased_case::<bf16, bf16>(&dev, &mut rng, counts, *n, *k, epilogue, biased);
        }
    }
    // The other type pairs once each, and the router-logits shape (one group, f32 output).
    let (counts, n, k) = &cases[1];
    check_biased_case::<f16, f16>(&dev, &mut rng, counts, *n, *k, CLAMPED, true);
    check_biased_case::<bf16, f32>(&dev, &mut rng, counts, *n, *k, CLAMPED, true);
    check_biased_case::<f16, f32>(&dev, &mut rng, &[17], 32, 200, GemmEpilogue::Store, true);
}

#[test]
fn biased_plans_check_the_bias_length() {
    let s = shape(100, 256, 128, 8);
    let biased = |len: usize| GemmRequest {
        bias_len: Some(len),
        ..request(s, CLAMPED)
    };
    assert!(plan_grouped_gemm(&biased(8 * 256)).unwrap().is_some());
    for len in [8 * 256 - 1, 8 * 128, 0] {
        assert!(matches!(
            plan_grouped_gemm(&biased(len)),
            Err(MoeError::ShapeMismatch { .. })
        ));
    }
    // A clamped SwiGLU with a bad limit is an invalid config, not a launch.
    let bad = GemmEpilogue::Activation(Activation {
        kind: ActivationKind::ClampedSilu {
            alpha: 1.702,
            limit: 0.0,
        },
        gated: true,
    });
    assert!(matches!(
        plan_grouped_gemm(&request(s, bad)),
        Err(MoeError::InvalidConfig(_))
    ));
}

/// `check_quant_case` with type pair `i % 4`.
fn check_quant_types(
    dev: &Device,
    rng: &mut StdRng,
    case: &Case,
    format: CodeFormat,
    group: usize,
    i: usize,
) {
    match i % 4 {
        0 => check_quant_case::<bf16, bf16>(dev, rng, case, format, group),
        1 => check_quant_case::<bf16, f32>(dev, rng, case, format, group),
        2 => check_quant_case::<f16, f16>(dev, rng, case, format, group),
        _ => check_quant_case::<f16, f32>(dev, rng, case, format, group),
    }
}

// ---------------------------------------------------------------------------------------------
// MXFP4: e2m1 codes two to a byte with e8m0 scale bytes.
// ---------------------------------------------------------------------------------------------

#[test]
fn mxfp4_plan_checks_the_codes_and_scales() {
    let s = shape(100, 256, 296, 8);
    let mxfp4 = |w_len: usize, group: usize, scales_len: usize| GemmRequest {
        weights: GemmWeights::Mxfp4E2M1 { group, scales_len },
        w_len,
        ..request(s, SWIGLU)
    };
    // Codes [E, N, ceil(K / 2)] bytes, scales [E, N, ceil(K / group)] bytes: K = 296 is 148 bytes
    // and 10 groups of 32 (a partial last one).
    let (codes, scales) = (8 * 256 * 148, 8 * 256 * 10);
    let plan = plan_grouped_gemm(&mxfp4(codes, 32, scales))
        .unwrap()
        .unwrap();
    assert!(plan.kernel.contains("_mxfp4_bf16_bf16"), "{}", plan.kernel);
    assert_ne!(plan.tile, GemmTileConfig::Generic);
    let odd = shape(100, 256, 301, 8);
    let plan = plan_grouped_gemm(&GemmRequest {
        shape: odd,
        x_len: 100 * 301,
        ..mxfp4(8 * 256 * 151, 32, scales)
    });
    assert_eq!(plan.unwrap().unwrap().tile, GemmTileConfig::Generic);
    for (w_len, group, scales_len) in [
        (8 * 256 * 296, 32, scales),
        (codes - 1, 32, scales),
        (codes, 32, scales - 1),
        (codes, 16, scales),
    ] {
        assert!(
            matches!(
                plan_grouped_gemm(&mxfp4(w_len, group, scales_len)),
                Err(MoeError::ShapeMismatch { .. })
            ),
            "codes {w_len}, group {group}, scales {scales_len}"
        );
    }
    assert!(matches!(
        plan_grouped_gemm(&mxfp4(codes, 0, 0)),
        Err(MoeError::InvalidConfig(_))
    ));
}

#[test]
fn mxfp4_weights_match_the_float64_oracle() {
    let Some(dev) = device("mxfp4_weights_match_the_float64_oracle") else {
        return;
    };
    let mut rng = common::rng("mxfp4_weights");
    let mut tiles = std::collections::BTreeSet::new();
    // (experts, rows, N, K, group, shift): gpt-oss's groups of 32 on every tile (decode: small;
    // medium; large), K % 32 != 0 (a partial last group), odd K (a half-used last byte, the generic
    // loader), misaligned codes (generic), groups that split the loader's 8-column chunks, one
    // scale per row.
    for (i, &(e, rows, n, k, group, shift)) in [
        (8usize, 16usize, 2 * 64, 320usize, 32usize, 0usize),
        (4, 160, 2 * 64, 96, 32, 0),
        (1, 600, 256, 128, 32, 0),
        (6, 40, 2 * 40, 200, 32, 0),
        (5, 30, 2 * 24, 77, 32, 0),
        (16, 24, 2 * 48, 64, 32, 1),
        (3, 20, 64, 96, 12, 0),
        (4, 12, 2 * 32, 136, 1 << 20, 0),
        (6, 30, 2 * 24, 9, 4, 0),
        (2, 4400, 2 * 256, 64, 32, 0),
    ]
    .iter()
    .enumerate()
    {
        let mut case = counts_case(&mut rng, e, rows, n, k);
        case.shift = shift;
        if let Segments::Counts { tail, .. } = &mut case.segments {
            *tail = i % 3;
        }
        check_quant_types(&dev, &mut rng, &case, CodeFormat::Mxfp4E2M1, group, i);
        // The tile these sizes take on this device (the plan is a pure function of them).
        let (covered, rows) = case.rows();
        let shape = shape(rows, n, k, e);
        let request = GemmRequest {
            weights: GemmWeights::Mxfp4E2M1 {
                group,
                scales_len: e * n * k.div_ceil(group),
            },
            w_len: e * n * k.div_ceil(2),
            w_addr: 0x7f10_0000_0000 + shift as u64,
            sm_count: dev.sm_count() as usize,
            ..request(shape, case.epilogue)
        };
        if covered > 0 {
            tiles.insert(format!(
                "{:?}",
                plan_grouped_gemm(&request).unwrap().unwrap().tile
            ));
        }
    }
    assert_eq!(tiles.len(), 4, "every tile runs: {tiles:?}");
}
