//! gpt-oss in MXFP4 end to end: a tiny checkpoint in the hub's layout (`*_blocks` e2m1 codes two
//! to a byte, `*_scales` e8m0 per 32 values, gate and up rows interleaved, bf16 router and biases,
//! `quant_method: mxfp4`), loaded as codes and scales ([`QuantExperts`]) and run by `moe run`,
//! against a float64 oracle that decodes the stored bytes itself (its own e2m1 bit-field decoding,
//! nibble order and `2^(e - 127)` scales); `moe info`; and the typed errors for bad MXFP4 tensors.

mod common;
mod hf_util;

use hf_util::{Stored, TempDir};
use moe_kernels::config::{Activation, ActivationKind, MoeConfig, RoutingConfig};
use moe_kernels::cpu::fast::CpuBackend;
use moe_kernels::cpu::layer::{MoeBiases, MoeWeights};
use moe_kernels::hf::HfModel;
use moe_kernels::quant::{fp4_e2m1_to_f32, CodeFormat};
use moe_kernels::{DType, MatRef, MoeError};
use rand::rngs::StdRng;
use rand::Rng;
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::process::Command;

const H: usize = 64;
const I: usize = 32;
const E: usize = 4;
const TOP_K: usize = 2;
const PREFIX: &str = "model.layers.0.mlp";

/// One MXFP4 matrix stack as stored: codes `[E, rows, cols / 32, 16]`, scales `[E, rows, cols / 32]`.
struct Packed {
    rows: usize,
    cols: usize,
    blocks: Vec<u8>,
    scales: Vec<u8>,
}

impl Packed {
    fn random(rng: &mut StdRng, rows: usize, cols: usize) -> Self {
        let groups = cols / 32;
        Packed {
            rows,
            cols,
            blocks: (0..E * rows * groups * 16).map(|_| rng.random()).collect(),
            // 2^-5 .. 2^-1: weights up to 3 in magnitude.
            scales: (0..E * rows * groups)
                .map(|_| rng.random_range(122..=126))
                .collect(),
        }
    }

    /// Stored value `(e, r, c)`: byte `(c % 32) / 2` of block `c / 32`, low nibble for even `c`.
    fn value(&self, e: usize, r: usize, c: usize) -> f64 {
        let groups = self.cols / 32;
        let g = (e * self.rows + r) * groups + c / 32;
        let byte = self.blocks[g * 16 + (c % 32) / 2];
        let nibble = if c.is_multiple_of(2) {
            byte & 0xf
        } else {
            byte >> 4
        };
        common::oracle::e2m1(nibble) * 2f64.powi(self.scales[g] as i32 - 127)
    }

    fn insert(&self, tensors: &mut BTreeMap<String, Stored>, name: &str) {
        let groups = self.cols / 32;
        tensors.insert(
            format!("{PREFIX}.experts.{name}_blocks"),
            Stored {
                dtype: Dtype::U8,
                shape: vec![E, self.rows, groups, 16],
                bytes: self.blocks.clone(),
            },
        );
        tensors.insert(
            format!("{PREFIX}.experts.{name}_scales"),
            Stored {
                dtype: Dtype::U8,
                shape: vec![E, self.rows, groups],
                bytes: self.scales.clone(),
            },
        );
    }
}

/// A tiny MXFP4 gpt-oss checkpoint (one layer) and the oracle's view of it: the config and the
/// dequantized weights in the crate's layout (gate rows, then up rows; biases likewise).
struct Mxfp4Model {
    config: Value,
    tensors: BTreeMap<String, Stored>,
    moe: MoeConfig,
    weights: MoeWeights<f32>,
}

impl Mxfp4Model {
    fn new(rng: &mut StdRng) -> Self {
        let mut tensors = BTreeMap::new();
        let mut bf16 = |tensors: &mut BTreeMap<String, Stored>, key: &str, shape, n, a: f32| {
            let v: Vec<f32> = (0..n).map(|_| rng.random_range(-a..a)).collect();
            let v = hf_util::round_to(DType::BF16, &v);
            tensors.insert(key.to_string(), Stored::float(DType::BF16, shape, &v));
            v
        };
        let router = bf16(
            &mut tensors,
            &format!("{PREFIX}.router.weight"),
            vec![E, H],
            E * H,
            0.3,
        );
        let router_bias = bf16(
            &mut tensors,
            &format!("{PREFIX}.router.bias"),
            vec![E],
            E,
            1.0,
        );
        let gu_bias = bf16(
            &mut tensors,
            &format!("{PREFIX}.experts.gate_up_proj_bias"),
            vec![E, 2 * I],
            E * 2 * I,
            3.0,
        );
        let down_bias = bf16(
            &mut tensors,
            &format!("{PREFIX}.experts.down_proj_bias"),
            vec![E, H],
            E * H,
            1.0,
        );
        let gu = Packed::random(rng, 2 * I, H);
        let dn = Packed::random(rng, H, I);
        gu.insert(&mut tensors, "gate_up_proj");
        dn.insert(&mut tensors, "down_proj");
        // Stored row 2j is gate j, 2j + 1 up j.
        let mut gate_up = vec![];
        let mut gate_up_bias = vec![];
        for e in 0..E {
            for half in 0..2 {
                for j in 0..I {
                    let r = 2 * j + half;
                    gate_up.extend((0..H).map(|c| gu.value(e, r, c) as f32));
                    gate_up_bias.push(gu_bias[e * 2 * I + r]);
                }
            }
        }
        let down = (0..E)
            .flat_map(|e| (0..H).flat_map(move |r| (0..I).map(move |c| (e, r, c))))
            .map(|(e, r, c)| dn.value(e, r, c) as f32)
            .collect();
        let config = json!({"model_type": "gpt_oss", "architectures": ["GptOssForCausalLM"],
            "hidden_size": H, "intermediate_size": I, "num_hidden_layers": 1,
            "num_local_experts": E, "num_experts_per_tok": TOP_K, "experts_per_token": TOP_K,
            "swiglu_limit": 7.0, "hidden_act": "silu", "torch_dtype": "bfloat16",
            "quantization_config": {"quant_method": "mxfp4",
                "modules_to_not_convert": ["model.layers.*.self_attn", "model.layers.*.mlp.router",
                                           "model.embed_tokens", "lm_head"]}});
        let moe = MoeConfig {
            hidden_size: H,
            intermediate_size: I,
            routing: RoutingConfig::softmax_topk(E, TOP_K, true),
            activation: Activation {
                kind: ActivationKind::ClampedSilu {
                    alpha: 1.702,
                    limit: 7.0,
                },
                gated: true,
            },
            shared_experts: vec![],
        };
        let weights = MoeWeights {
            router,
            correction_bias: None,
            gate_up,
            down,
            shared: vec![],
            biases: Some(MoeBiases {
                router: router_bias,
                gate_up: gate_up_bias,
                down: down_bias,
            }),
        };
        Mxfp4Model {
            config,
            tensors,
            moe,
            weights,
        }
    }

    fn write(&self, tag: &str) -> TempDir {
        let d = TempDir::new(tag);
        std::fs::write(d.path().join("config.json"), self.config.to_string()).unwrap();
        hf_util::write_safetensors(&d.path().join("model.safetensors"), &self.tensors);
        d
    }
}

#[test]
fn e2m1_decoding_matches_the_definition() {
    for code in 0..16u8 {
        assert_eq!(
            fp4_e2m1_to_f32(code) as f64,
            common::oracle::e2m1(code),
            "code {code}"
        );
    }
}

#[test]
fn moe_run_on_an_mxfp4_checkpoint_matches_the_oracle() {
    let mut rng = common::rng("moe_run_on_an_mxfp4_checkpoint");
    let m = Mxfp4Model::new(&mut rng);
    let dir = m.write("mxfp4");

    // Loaded as codes and scales: half a byte per weight, never a full-precision copy.
    let model = HfModel::open(dir.path()).unwrap();
    let layer = model.quantized_cpu_layer::<f32>(0).unwrap();
    let w = layer.weights();
    assert_eq!(w.gate_up.format(), CodeFormat::Mxfp4E2M1);
    assert_eq!(w.gate_up.codes().len(), E * 2 * I * H / 2);
    assert_eq!(w.down.codes().len(), E * H * I / 2);
    assert!(matches!(
        model.cpu_layer::<f32>(0),
        Err(MoeError::UnsupportedModel(_))
    ));

    let work = TempDir::new("mxfp4-io");
    let (input, output) = (
        work.path().join("in.safetensors"),
        work.path().join("out.safetensors"),
    );
    let t = 7;
    let (x, want) = loop {
        let x = common::randn(&mut rng, t * H, 1.0);
        if let Some(o) = hf_util::oracle_output(&m.moe, &m.weights, &common::f64s(&x)) {
            break (x, o);
        }
    };
    // The fast backend's MXFP4 kernels decode the reference's values; only the order of the
    // sums differs.
    let xs = MatRef::new("x", &x, t, H).unwrap();
    let fast = layer.forward(xs).unwrap();
    let reference = layer
        .clone()
        .with_backend(CpuBackend::Reference)
        .forward(xs)
        .unwrap();
    assert_eq!(fast.routing, reference.routing);
    common::assert_close(
        "MXFP4 layer, fast against reference backend, f32",
        &common::f64s(&fast.hidden),
        &common::f64s(&reference.hidden),
        1e-5,
    );
    common::assert_close(
        "MXFP4 layer (library), f32",
        &common::f64s(&fast.hidden),
        &want,
        1e-4,
    );

    hf_util::write_hidden_states(&input, &x, t);
    let got = hf_util::moe_run_cpu(dir.path(), 0, "f32", &input, &output);
    common::assert_close("moe run, MXFP4 gpt-oss, f32", &got, &want, 1e-4);

    // bf16 activations (the router and biases as stored).
    let got = hf_util::moe_run_cpu(dir.path(), 0, "bf16", &input, &output);
    common::assert_close("moe run, MXFP4 gpt-oss, bf16", &got, &want, 3e-2);
}

#[test]
fn moe_info_shows_mxfp4() {
    let mut rng = common::rng("moe_info_shows_mxfp4");
    let dir = Mxfp4Model::new(&mut rng).write("mxfp4-info");
    let out = Command::new(env!("CARGO_BIN_EXE_moe"))
        .args(["info", "--model"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = String::from_utf8_lossy(&out.stdout);
    for needle in [
        "mxfp4, MXFP4 e2m1 codes (two per byte) with an e8m0 scale per 32 values",
        "MXFP4 blocks and e8m0 scales, gate/up interleaved, with biases",
        "clamped silu (alpha 1.702, limit 7)",
    ] {
        assert!(s.contains(needle), "info lacks `{needle}`:\n{s}");
    }
}

/// Misshapen or mistyped blocks and scales, a NaN scale, MXFP4 tensors without the config saying
/// so, and sizes that are not multiples of 32: each a typed error.
#[test]
fn mxfp4_errors_are_typed() {
    let mut rng = common::rng("mxfp4_errors_are_typed");
    let load = |m: &Mxfp4Model| {
        let dir = m.write("mxfp4-bad");
        HfModel::open(dir.path()).and_then(|model| model.quantized_cpu_layer::<f32>(0).map(|_| ()))
    };
    let blocks = format!("{PREFIX}.experts.gate_up_proj_blocks");
    let scales = format!("{PREFIX}.experts.down_proj_scales");

    let mut m = Mxfp4Model::new(&mut rng);
    let b = m.tensors.get_mut(&blocks).unwrap();
    b.shape = vec![E, 2 * I, H / 16, 8];
    assert!(
        matches!(load(&m), Err(MoeError::TensorShape { ref key, .. }) if *key == blocks),
        "{:?}",
        load(&m)
    );

    let mut m = Mxfp4Model::new(&mut rng);
    let b = m.tensors.get_mut(&blocks).unwrap();
    b.dtype = Dtype::I8;
    assert!(
        matches!(load(&m), Err(MoeError::TensorDType { ref key, .. }) if *key == blocks),
        "{:?}",
        load(&m)
    );

    let mut m = Mxfp4Model::new(&mut rng);
    m.tensors.get_mut(&scales).unwrap().bytes[5] = 0xff;
    assert!(
        matches!(load(&m), Err(MoeError::BadScale { index: 5, .. })),
        "{:?}",
        load(&m)
    );

    let mut m = Mxfp4Model::new(&mut rng);
    m.config
        .as_object_mut()
        .unwrap()
        .remove("quantization_config");
    let dir = m.write("mxfp4-noquant");
    let model = HfModel::open(dir.path()).unwrap();
    assert!(matches!(
        model.cpu_layer::<f32>(0),
        Err(MoeError::UnsupportedModel(_))
    ));

    // MXFP4 is read in gpt-oss's layout only: another family's per-expert weights are refused.
    let mut mixtral = hf_util::TinyModel::new(
        &mut rng,
        moe_kernels::hf::ModelFamily::Mixtral,
        DType::BF16,
        false,
    );
    mixtral.config["quantization_config"] = json!({"quant_method": "mxfp4"});
    let dir = mixtral.write_temp("mxfp4-mixtral", 1);
    let e = HfModel::open(dir.path())
        .unwrap()
        .quantized_cpu_layer::<f32>(0)
        .unwrap_err();
    assert!(
        matches!(e, MoeError::UnsupportedModel(ref s) if s.contains("MXFP4")),
        "{e:?}"
    );

    let mut m = Mxfp4Model::new(&mut rng);
    m.config["hidden_size"] = json!(48);
    let e = load(&m).unwrap_err();
    assert!(
        matches!(e, MoeError::UnsupportedModel(ref s) if s.contains("multiples of 32")),
        "{e:?}"
    );
}

/// gpt-oss's MXFP4 checkpoint on the GPU: the experts upload as MXFP4 (codes and e8m0 scale bytes,
/// decoded by the GEMM kernels), and `moe run --device cuda --dtype bf16` (router bias, expert
/// biases and the clamped SwiGLU in the kernels) matches the float64 oracle.
#[test]
fn moe_run_on_the_gpu_keeps_mxfp4_and_matches_the_oracle() {
    let Some(dev) = common::gpu(
        "hf_mxfp4",
        "moe_run_on_the_gpu_keeps_mxfp4_and_matches_the_oracle",
    ) else {
        return;
    };
    use moe_kernels::gpu::UploadExperts;
    let mut rng = common::rng("moe_run_on_the_gpu_keeps_mxfp4_and_matches_the_oracle");
    let m = Mxfp4Model::new(&mut rng);
    let dir = m.write("mxfp4-gpu");
    let model = HfModel::open(dir.path()).unwrap();
    let layer = model.quantized_cpu_layer::<half::bf16>(0).unwrap();
    let experts = layer.weights().gate_up.upload(dev.stream()).unwrap();
    assert_eq!(experts.format(), CodeFormat::Mxfp4E2M1);

    let work = TempDir::new("mxfp4-gpu-io");
    let (input, output) = (
        work.path().join("in.safetensors"),
        work.path().join("out.safetensors"),
    );
    let t = 7;
    let (x, want) = loop {
        let x = common::randn(&mut rng, t * H, 1.0);
        if let Some(o) = hf_util::oracle_output(&m.moe, &m.weights, &common::f64s(&x)) {
            break (x, o);
        }
    };
    hf_util::write_hidden_states(&input, &x, t);
    let got = hf_util::moe_run_gpu_bf16(dir.path(), 0, &input, &output);
    common::assert_close(
        "moe run --device cuda, MXFP4 gpt-oss, bf16",
        &got,
        &want,
        3e-2,
    );
}
