//! FP8 expert weights end to end: `quantization_config` parsing, the loader keeping the codes and
//! scales ([`QuantExperts`]), and the CPU layer dequantizing inside its GEMMs, against a float64
//! oracle that decodes the stored tensors itself (its own e4m3 decoding and scale indexing). Block
//! scales (with partial edge blocks: H = 24 in blocks of 16), channel scales and tensor scales, and
//! the typed errors for missing, bad and misshapen scales.

mod common;
mod hf_util;

use common::oracle;

use hf_util::{Fp8Scheme, Stored, TempDir, TinyModel};
use moe_kernels::cpu::layer::MoeWeights;
use moe_kernels::hf::{HfModel, HfModelConfig, ModelFamily};
use moe_kernels::quant::{fp8_e4m3_to_f32, QuantExperts};
use moe_kernels::{DType, MatRef, MoeError};
use rand::rngs::StdRng;
use safetensors::Dtype;
use serde_json::json;
use std::process::Command;

#[test]
fn e4m3_decoding_matches_the_definition() {
    for code in 0..=255u8 {
        let (got, want) = (fp8_e4m3_to_f32(code) as f64, oracle::e4m3(code));
        assert!(
            got == want || (got.is_nan() && want.is_nan()),
            "code {code:#04x}: {got} vs {want}"
        );
    }
}

/// A stored float tensor's values.
fn floats(t: &Stored) -> Vec<f64> {
    match t.dtype {
        Dtype::F32 => t
            .bytes
            .chunks(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()) as f64)
            .collect(),
        Dtype::BF16 => t
            .bytes
            .chunks(2)
            .map(|c| f32::from_bits((u16::from_le_bytes([c[0], c[1]]) as u32) << 16) as f64)
            .collect(),
        other => panic!("not a float tensor: {other:?}"),
    }
}

/// The stored FP8 matrix `key` `[n, k]`, dequantized in f64: each code times its scale, the scale
/// found by the stored scale tensor's shape (`[1]`, `[n, 1]` or blocks of `block`).
fn dequant(m: &TinyModel, key: &str, block: Option<[usize; 2]>) -> Vec<f64> {
    let t = &m.tensors[key];
    assert_eq!(t.dtype, Dtype::F8_E4M3, "{key}");
    let (n, k) = (t.shape[0], t.shape[1]);
    let module = key.strip_suffix(".weight").unwrap();
    let s = m
        .tensors
        .get(&format!("{module}.weight_scale_inv"))
        .or_else(|| m.tensors.get(&format!("{module}.weight_scale")))
        .unwrap();
    let scales = floats(s);
    (0..n * k)
        .map(|i| {
            let (r, c) = (i / k, i % k);
            let scale = match (&s.shape[..], block) {
                ([1], _) => scales[0],
                ([_, 1], None) => scales[r],
                ([_, kb], Some([br, bc])) => scales[(r / br) * kb + c / bc],
                (shape, _) => panic!("{key}: scale shape {shape:?}"),
            };
            oracle::e4m3(t.bytes[i]) * scale
        })
        .collect()
}

/// Layer `l`'s weights as the oracle uses them: the router, bias and shared gate as stored, every
/// expert projection dequantized here, stacked in the crate's layout (gate rows, then up rows).
fn oracle_weights(m: &TinyModel, l: usize, block: Option<[usize; 2]>) -> MoeWeights<f32> {
    let plain = &m.layers[&l];
    let p = m.prefix(l);
    let names = m.expert_names();
    let f32s = |v: Vec<f64>| v.into_iter().map(|x| x as f32).collect::<Vec<f32>>();
    let mut gate_up = vec![];
    let mut down = vec![];
    for e in 0..m.moe.routing.num_experts {
        for name in &names[..2] {
            gate_up.extend(dequant(m, &format!("{p}.experts.{e}.{name}.weight"), block));
        }
        down.extend(dequant(
            m,
            &format!("{p}.experts.{e}.{}.weight", names[2]),
            block,
        ));
    }
    let shared = plain
        .shared
        .iter()
        .map(|sw| {
            let sp = m
                .shared_prefix(l)
                .expect("a shared expert inside the block");
            let mut gu = dequant(m, &format!("{sp}.gate_proj.weight"), block);
            gu.extend(dequant(m, &format!("{sp}.up_proj.weight"), block));
            moe_kernels::cpu::layer::SharedExpertWeights {
                gate_up: f32s(gu),
                down: f32s(dequant(m, &format!("{sp}.down_proj.weight"), block)),
                gate: sw.gate.clone(),
            }
        })
        .collect();
    MoeWeights {
        router: plain.router.clone(),
        biases: None,
        correction_bias: plain.correction_bias.clone(),
        gate_up: f32s(gate_up),
        down: f32s(down),
        shared,
    }
}

fn quantized(rng: &mut StdRng, family: ModelFamily, scheme: Fp8Scheme) -> TinyModel {
    let mut m = TinyModel::new(rng, family, DType::BF16, false);
    m.quantize_fp8(rng, scheme);
    m
}

#[test]
fn fp8_layers_match_the_oracle() {
    let mut rng = common::rng("fp8_layers_match_the_oracle");
    let cases = [
        (ModelFamily::DeepseekV3, Fp8Scheme::Block([16, 16])),
        (ModelFamily::DeepseekV2, Fp8Scheme::Block([128, 128])),
        (ModelFamily::Qwen2Moe, Fp8Scheme::Channel),
        (ModelFamily::Mixtral, Fp8Scheme::Tensor),
        (ModelFamily::Qwen3Moe, Fp8Scheme::Block([8, 16])),
    ];
    for (n, (family, scheme)) in cases.into_iter().enumerate() {
        let m = quantized(&mut rng, family, scheme);
        let dir = m.write_temp("fp8", 1 + n % 2);
        let what = format!("{family} {scheme:?}");
        let model = HfModel::open(dir.path()).unwrap();
        assert!(model.is_quantized(), "{what}");
        let block = match scheme {
            Fp8Scheme::Block(b) => Some(b),
            _ => None,
        };
        assert_eq!(
            model.config().quantization.as_ref().unwrap().block,
            block,
            "{what}"
        );
        assert_eq!(model.config().moe, m.moe, "{what}");
        assert!(matches!(
            model.cpu_layer::<f32>(m.moe_layer_no()),
            Err(MoeError::UnsupportedModel(_))
        ));
        for &l in m.layers.keys() {
            assert_eq!(model.stored_dtype(l).unwrap(), DType::BF16, "{what}");
            let w = oracle_weights(&m, l, block);
            let (t, h) = (7, m.moe.hidden_size);
            let (x, want) = loop {
                let x = common::randn(&mut rng, t * h, 1.0);
                if let Some(want) = hf_util::oracle_output(&m.moe, &w, &common::f64s(&x)) {
                    break (x, want);
                }
            };
            let layer = model.quantized_cpu_layer::<f32>(l).unwrap();
            let gu: &QuantExperts = &layer.weights().gate_up;
            assert_eq!(
                gu.codes().len(),
                w.gate_up.len(),
                "{what}: one byte per weight"
            );
            let out = layer.forward(MatRef::new("x", &x, t, h).unwrap()).unwrap();
            common::assert_close(
                &format!("{what} layer {l} f32"),
                &common::f64s(&out.hidden),
                &want,
                1e-4,
            );
            // The bf16 layer sees the input rounded to bf16: the oracle takes the same input, so a
            // router near-tie that the rounding flips is not counted as the layer's error.
            let xb: Vec<half::bf16> = x.iter().map(|&v| half::bf16::from_f32(v)).collect();
            let Some(want_b) = hf_util::oracle_output(&m.moe, &w, &common::el64(&xb)) else {
                continue;
            };
            let layer = model.quantized_cpu_layer::<half::bf16>(l).unwrap();
            let out = layer.forward(MatRef::new("x", &xb, t, h).unwrap()).unwrap();
            common::assert_close(
                &format!("{what} layer {l} bf16"),
                &common::el64(&out.hidden),
                &want_b,
                3e-2,
            );
        }
    }
}

#[test]
fn moe_run_on_an_fp8_checkpoint() {
    let mut rng = common::rng("moe_run_on_an_fp8_checkpoint");
    let m = quantized(
        &mut rng,
        ModelFamily::DeepseekV3,
        Fp8Scheme::Block([16, 16]),
    );
    let dir = m.write_temp("fp8-run", 2);
    let work = TempDir::new("fp8-run-io");
    let (t, h) = (4, m.moe.hidden_size);
    let x: Vec<f32> = common::randn(&mut rng, t * h, 1.0);
    let input = work.path().join("in.safetensors");
    hf_util::write_hidden_states(&input, &x, t);
    let l = m.moe_layer_no();
    let got = hf_util::moe_run_cpu(
        dir.path(),
        l,
        "f32",
        &input,
        &work.path().join("out.safetensors"),
    );
    let want = hf_util::oracle_output(
        &m.moe,
        &oracle_weights(&m, l, Some([16, 16])),
        &common::f64s(&x),
    );
    if let Some(want) = want {
        common::assert_close("moe run fp8", &got, &want, 1e-4);
    }

    // `moe info` names the format and counts the scales in the bytes per layer.
    let info = Command::new(env!("CARGO_BIN_EXE_moe"))
        .args(["info", "--model"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&info.stdout);
    let prefix = m.prefix(l);
    let bytes: usize = m
        .tensors
        .iter()
        .filter(|(k, _)| k.starts_with(&format!("{prefix}.")))
        .map(|(_, t)| t.bytes.len())
        .sum();
    for needle in [
        "fp8, FP8 e4m3 with 16 x 16 block scales".to_string(),
        format!("experts F8_E4M3 (per-expert, under model.layers.{{L}}.mlp), router BF16, {:.1} KiB per layer", bytes as f64 / 1024.0),
    ] {
        assert!(text.contains(&needle), "info lacks `{needle}`:\n{text}");
    }

    // On the GPU (the emulated one when there is no real one) the experts stay FP8 and run on the
    // FP8 GEMM, in bf16: the same oracle, at bf16's tolerance, on the input as rounded to bf16.
    let output = work.path().join("out-cuda.safetensors");
    if common::gpu("hf_quant", "moe_run_on_an_fp8_checkpoint (cuda)").is_none() {
        return;
    }
    let got = hf_util::moe_run_gpu_bf16(dir.path(), l, &input, &output);
    let x_bf16 = hf_util::round_to(DType::BF16, &x);
    let want = hf_util::oracle_output(
        &m.moe,
        &oracle_weights(&m, l, Some([16, 16])),
        &common::f64s(&x_bf16),
    );
    if let Some(want) = want {
        common::assert_close("moe run fp8 on the GPU (bf16)", &got, &want, 3e-2);
    }
}

/// Missing, non-finite, zero and misshapen scales, codes of another type, and quantization methods
/// the crate does not implement: each a typed error naming the tensor or setting.
#[test]
fn fp8_errors_are_typed() {
    let mut rng = common::rng("fp8_errors_are_typed");
    let base = quantized(
        &mut rng,
        ModelFamily::DeepseekV3,
        Fp8Scheme::Block([16, 16]),
    );
    let l = base.moe_layer_no();
    let scale = format!("{}.experts.3.up_proj.weight_scale_inv", base.prefix(l));
    let load = |m: &TinyModel| {
        let dir = m.write_temp("fp8-err", 1);
        HfModel::open(dir.path())
            .and_then(|model| model.quantized_cpu_layer::<f32>(l))
            .map(|_| ())
    };
    load(&base).unwrap();

    let mut m = quantized(
        &mut rng,
        ModelFamily::DeepseekV3,
        Fp8Scheme::Block([16, 16]),
    );
    m.tensors.remove(&scale);
    match load(&m) {
        Err(MoeError::MissingTensor { key, .. }) => assert_eq!(key, scale),
        other => panic!("{other:?}"),
    }
    for (bad, index) in [(f32::NAN, 1), (0.0, 0), (-1.0, 1), (f32::INFINITY, 0)] {
        let mut m = quantized(
            &mut rng,
            ModelFamily::DeepseekV3,
            Fp8Scheme::Block([16, 16]),
        );
        let t = &m.tensors[&scale];
        let mut v: Vec<f32> = floats(t).into_iter().map(|x| x as f32).collect();
        v[index] = bad;
        let shape = t.shape.clone();
        m.tensors
            .insert(scale.clone(), Stored::float(DType::F32, shape, &v));
        match load(&m) {
            Err(MoeError::BadScale { what, index: i, .. }) => {
                assert!(what.contains(&scale) && i == index, "{what} {i}")
            }
            other => panic!("{bad}: {other:?}"),
        }
    }
    let mut m = quantized(
        &mut rng,
        ModelFamily::DeepseekV3,
        Fp8Scheme::Block([16, 16]),
    );
    m.tensors
        .insert(scale.clone(), Stored::float(DType::F32, vec![3], &[0.1; 3]));
    match load(&m) {
        Err(e @ MoeError::ShapeMismatch { .. }) => assert!(e.to_string().contains(&scale), "{e}"),
        other => panic!("{other:?}"),
    }
    let mut m = quantized(
        &mut rng,
        ModelFamily::DeepseekV3,
        Fp8Scheme::Block([16, 16]),
    );
    let key = format!("{}.experts.0.gate_proj.weight", m.prefix(l));
    m.tensors.insert(
        key.clone(),
        Stored::float(DType::BF16, vec![16, 24], &[0.5; 16 * 24]),
    );
    match load(&m) {
        Err(MoeError::TensorDType {
            key: k, expected, ..
        }) => assert!(k == key && expected == "F8_E4M3"),
        other => panic!("{other:?}"),
    }

    let cfg = |q: serde_json::Value| {
        let mut c = base.config.clone();
        c["quantization_config"] = q;
        HfModelConfig::from_json_str(&c.to_string())
    };
    for q in [
        json!({"quant_method": "awq", "bits": 4}),
        json!({"quant_method": "gptq", "bits": 4}),
        json!({"quant_method": "fp8", "fmt": "e5m2"}),
        json!({"quant_method": "compressed-tensors", "config_groups": {"g": {"weights":
            {"num_bits": 4, "type": "int", "strategy": "group", "group_size": 32}}}}),
    ] {
        assert!(
            matches!(cfg(q.clone()), Err(MoeError::UnsupportedModel(_))),
            "{q}"
        );
    }
    for q in [
        json!("fp8"),
        json!({}),
        json!({"quant_method": "fp8", "weight_block_size": [0, 128]}),
        json!({"quant_method": "compressed-tensors"}),
    ] {
        assert!(
            matches!(cfg(q.clone()), Err(MoeError::InvalidConfig(_))),
            "{q}"
        );
    }
}
