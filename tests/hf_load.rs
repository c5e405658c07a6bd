//! Hugging Face config parsing and checkpoint loading: every family, both expert layouts, sharded and
//! unsharded, bf16/f16/f32, and every error path.

mod common;
mod hf_util;

use half::bf16;
use hf_util::{write_safetensors, Stored, TempDir, TinyModel, E, H, I};
use moe_kernels::config::{GroupScore, GroupedTopK, MoeConfig, ScoringFunc};
use moe_kernels::cpu::layer::MoeWeights;
use moe_kernels::hf::{
    load_moe_layer, Checkpoint, ExpertLayout, HfModel, HfModelConfig, LayerPlacement, ModelFamily,
};
use moe_kernels::{ActivationKind, DType, MoeError};
use safetensors::Dtype;
use serde_json::{json, Value};
use std::collections::BTreeMap;

fn parse(v: &Value) -> Result<HfModelConfig, MoeError> {
    HfModelConfig::from_json_str(&v.to_string())
}

// ---------------------------------------------------------------------------------------------------
// config.json

/// The reference models' published configs (MoE fields) give the crate's presets.
#[test]
fn reference_configs_match_presets() {
    let mixtral = json!({"model_type": "mixtral", "hidden_size": 4096, "intermediate_size": 14336,
        "num_local_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 32, "hidden_act": "silu",
        "torch_dtype": "bfloat16"});
    let c = parse(&mixtral).unwrap();
    assert_eq!(c.moe, MoeConfig::mixtral_8x7b());
    assert_eq!(c.moe_layers(), (0..32).collect::<Vec<_>>());
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));

    let qwen2 = json!({"model_type": "qwen2_moe", "hidden_size": 2048, "intermediate_size": 5632,
        "moe_intermediate_size": 1408, "shared_expert_intermediate_size": 5632, "num_experts": 60,
        "num_experts_per_tok": 4, "norm_topk_prob": false, "decoder_sparse_step": 1,
        "num_hidden_layers": 24, "hidden_act": "silu"});
    let c = parse(&qwen2).unwrap();
    assert_eq!(c.moe, MoeConfig::qwen2_moe_a2_7b());
    assert_eq!(c.moe_layers().len(), 24);

    let qwen3 = json!({"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_experts": 128, "num_experts_per_tok": 8,
        "norm_topk_prob": true, "decoder_sparse_step": 1, "mlp_only_layers": [],
        "num_hidden_layers": 48, "hidden_act": "silu"});
    let c = parse(&qwen3).unwrap();
    assert_eq!(c.moe, MoeConfig::qwen3_30b_a3b());
    assert_eq!(c.moe_layers().len(), 48);

    let v2_lite = json!({"model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944,
        "moe_intermediate_size": 1408, "n_routed_experts": 64, "n_shared_experts": 2,
        "num_experts_per_tok": 6, "topk_method": "greedy", "n_group": 1, "topk_group": 1,
        "norm_topk_prob": false, "routed_scaling_factor": 1.0, "scoring_func": "softmax",
        "first_k_dense_replace": 1, "moe_layer_freq": 1, "num_hidden_layers": 27,
        "hidden_act": "silu"});
    let c = parse(&v2_lite).unwrap();
    assert_eq!(c.moe, MoeConfig::deepseek_v2_lite());
    assert_eq!(c.moe_layers(), (1..27).collect::<Vec<_>>());

    let v3 = json!({"model_type": "deepseek_v3", "hidden_size": 7168, "intermediate_size": 18432,
        "moe_intermediate_size": 2048, "n_routed_experts": 256, "n_shared_experts": 1,
        "num_experts_per_tok": 8, "topk_method": "noaux_tc", "n_group": 8, "topk_group": 4,
        "norm_topk_prob": true, "routed_scaling_factor": 2.5, "scoring_func": "sigmoid",
        "first_k_dense_replace": 3, "moe_layer_freq": 1, "num_hidden_layers": 61,
        "hidden_act": "silu"});
    let c = parse(&v3).unwrap();
    assert_eq!(c.moe, MoeConfig::deepseek_v3());
    assert_eq!(c.moe_layers(), (3..61).collect::<Vec<_>>());

    let olmoe = json!({"model_type": "olmoe", "hidden_size": 2048, "intermediate_size": 1024,
        "num_experts": 64, "num_experts_per_tok": 8, "norm_topk_prob": false,
        "num_hidden_layers": 16, "hidden_act": "silu"});
    let c = parse(&olmoe).unwrap();
    assert_eq!(c.moe, MoeConfig::olmoe_1b_7b());
    assert_eq!(c.moe_layers().len(), 16);
}

/// Every name a family's config class accepts for the expert count (its `attribute_map`) gives the
/// same config; two names that disagree, or none, are errors naming them.
#[test]
fn expert_count_aliases() {
    let base = |family: ModelFamily| -> Value {
        let mut v = json!({"model_type": family.name(), "hidden_size": 8, "intermediate_size": 4,
            "moe_intermediate_size": 4, "shared_expert_intermediate_size": 4,
            "num_experts_per_tok": 2, "num_hidden_layers": 2});
        if family == ModelFamily::DeepseekV3 {
            v["n_group"] = json!(2);
            v["topk_group"] = json!(1);
        }
        v
    };
    for family in ModelFamily::ALL {
        // DBRX's count sits under ffn_config (its parsing is checked in tests/hf_families.rs).
        if family == ModelFamily::Dbrx {
            continue;
        }
        let keys = family.expert_count_keys();
        let mut first = base(family);
        first[keys[0]] = json!(6);
        let want = parse(&first).unwrap().moe;
        assert_eq!(want.routing.num_experts, 6, "{family}");
        for key in keys {
            let mut v = base(family);
            v[*key] = json!(6);
            assert_eq!(parse(&v).unwrap().moe, want, "{family}: `{key}`");
        }
        // transformers 5 writes a Qwen3-MoE config with `num_local_experts`.
        if family == ModelFamily::Qwen3Moe {
            assert!(keys.contains(&"num_local_experts"), "{family}");
        }

        // Granite's config class has no alias.
        if let [first, second, ..] = keys[..] {
            let mut both = base(family);
            both[first] = json!(6);
            both[second] = json!(6);
            assert_eq!(
                parse(&both).unwrap().moe,
                want,
                "{family}: agreeing aliases"
            );
            both[second] = json!(8);
            let msg = parse(&both).unwrap_err().to_string();
            assert!(
                msg.contains(first) && msg.contains(second) && msg.contains("agree"),
                "{msg}"
            );
        }
        let msg = parse(&base(family)).unwrap_err().to_string();
        assert!(
            keys.iter().all(|k| msg.contains(&format!("`{k}`"))) && msg.contains("missing"),
            "{msg}"
        );
        let mut zero = base(family);
        zero[keys[keys.len() - 1]] = json!(0);
        let msg = parse(&zero).unwrap_err().to_string();
        assert!(
            msg.contains(&format!("`{}`", keys[keys.len() - 1])) && msg.contains("no MoE"),
            "{msg}"
        );
    }
}

/// A multimodal config keeps the language model's settings under `text_config`; errors name the
/// nested field.
#[test]
fn text_config_is_read() {
    let text = json!({"model_type": "qwen3_moe", "hidden_size": 2048, "intermediate_size": 6144,
        "moe_intermediate_size": 768, "num_local_experts": 128, "num_experts_per_tok": 8,
        "norm_topk_prob": true, "num_hidden_layers": 48, "hidden_act": "silu"});
    let wrapped = json!({"model_type": "qwen3_vl_moe", "dtype": "bfloat16",
        "vision_config": {"hidden_size": 1152, "num_hidden_layers": 27}, "text_config": text});
    let c = parse(&wrapped).unwrap();
    assert_eq!(c.moe, MoeConfig::qwen3_30b_a3b());
    assert_eq!(
        (c.family, c.model_type.as_str()),
        (ModelFamily::Qwen3Moe, "qwen3_moe")
    );
    assert_eq!(c.torch_dtype.as_deref(), Some("bfloat16"));

    // The wrapper's model_type stands in when the text config has none.
    let mut untyped = wrapped.clone();
    untyped["model_type"] = json!("qwen3_moe");
    untyped["text_config"]
        .as_object_mut()
        .unwrap()
        .remove("model_type");
    assert_eq!(parse(&untyped).unwrap().moe, MoeConfig::qwen3_30b_a3b());

    let mut bad = wrapped.clone();
    bad["text_config"]["num_hidden_layers"] = json!("many");
    let msg = parse(&bad).unwrap_err().to_string();
    assert!(msg.contains("`text_config.num_hidden_layers`"), "{msg}");
    let mut bad = wrapped.clone();
    bad["text_config"] = json!([1, 2]);
    let msg = parse(&bad).unwrap_err().to_string();
    assert!(
        msg.contains("`text_config`") && msg.contains("object"),
        "{msg}"
    );
}

fn deepseek(version: &str, extra: Value) -> Value {
    let mut v = json!({"model_type": version, "hidden_size": 8, "moe_intermediate_size": 4,
        "n_routed_experts": 8, "num_experts_per_tok": 2, "num_hidden_layers": 4});
    for (k, x) in extra.as_object().unwrap() {
        v[k] = x.clone();
    }
    v
}

/// DeepSeek weight rules follow modeling_deepseek.py: V2 scales only when it does not renormalise, V3
/// renormalises (when asked) and always scales; both renormalise only for k > 1.
#[test]
fn deepseek_routing_semantics() {
    let r = |v: Value| parse(&v).unwrap().moe.routing;

    let v2 = r(deepseek(
        "deepseek_v2",
        json!({"norm_topk_prob": true, "routed_scaling_factor": 16.0}),
    ));
    assert!(v2.renormalize);
    assert_eq!(v2.routed_scaling_factor, 1.0);
    let v2 = r(deepseek(
        "deepseek_v2",
        json!({"norm_topk_prob": false, "routed_scaling_factor": 16.0}),
    ));
    assert!(!v2.renormalize);
    assert_eq!(v2.routed_scaling_factor, 16.0);
    assert_eq!(v2.scoring, ScoringFunc::Softmax);
    assert_eq!(v2.grouping, None);
    assert!(!v2.correction_bias);
    let v2 = r(deepseek(
        "deepseek_v2",
        json!({"norm_topk_prob": true, "routed_scaling_factor": 16.0, "num_experts_per_tok": 1}),
    ));
    assert!(!v2.renormalize);
    assert_eq!(v2.routed_scaling_factor, 16.0);
    let v2 = r(deepseek(
        "deepseek_v2",
        json!({"topk_method": "group_limited_greedy", "n_group": 4, "topk_group": 2}),
    ));
    assert_eq!(
        v2.grouping,
        Some(GroupedTopK {
            n_group: 4,
            topk_group: 2,
            score: GroupScore::Max
        })
    );

    // V3 defaults: sigmoid, noaux_tc (needs n_group / topk_group).
    let v3 = r(deepseek(
        "deepseek_v3",
        json!({"n_group": 2, "topk_group": 1, "norm_topk_prob": true, "routed_scaling_factor": 2.5}),
    ));
    assert_eq!(v3.scoring, ScoringFunc::Sigmoid);
    assert!(v3.correction_bias && v3.renormalize);
    assert_eq!(v3.routed_scaling_factor, 2.5);
    assert_eq!(v3.grouping.unwrap().score, GroupScore::SumTop2);
    let v3 = r(deepseek(
        "deepseek_v3",
        json!({"n_group": 2, "topk_group": 1, "norm_topk_prob": false, "routed_scaling_factor": 2.5}),
    ));
    assert!(!v3.renormalize);
    assert_eq!(v3.routed_scaling_factor, 2.5);

    // Shared experts fold into one; none when null.
    let c = parse(&deepseek("deepseek_v2", json!({"n_shared_experts": 3}))).unwrap();
    assert_eq!(c.moe.shared_experts.len(), 1);
    assert_eq!(c.moe.shared_experts[0].intermediate_size, 12);
    assert!(!c.moe.shared_experts[0].sigmoid_gate);
    let c = parse(&deepseek("deepseek_v2", json!({"n_shared_experts": null}))).unwrap();
    assert!(c.moe.shared_experts.is_empty());

    // Layer placement.
    let c = parse(&deepseek(
        "deepseek_v2",
        json!({"first_k_dense_replace": 1, "moe_layer_freq": 2}),
    ))
    .unwrap();
    assert_eq!(c.moe_layers(), vec![2]);
    assert_eq!(
        c.placement,
        LayerPlacement::FirstKDense {
            first_k_dense_replace: 1,
            moe_layer_freq: 2
        }
    );
}

#[test]
fn qwen_layer_placement() {
    let base = json!({"model_type": "qwen2_moe", "hidden_size": 8, "moe_intermediate_size": 4,
        "shared_expert_intermediate_size": 0, "num_experts": 4, "num_experts_per_tok": 2,
        "num_hidden_layers": 8, "decoder_sparse_step": 2, "mlp_only_layers": [3, 6]});
    let c = parse(&base).unwrap();
    assert_eq!(c.moe_layers(), vec![1, 5, 7]);
    assert!(c.moe.shared_experts.is_empty());
    assert!(c.is_moe_layer(5) && !c.is_moe_layer(3) && !c.is_moe_layer(8));
    match c.check_moe_layer(3) {
        Err(MoeError::NotMoeLayer { layer: 3, reason }) => {
            assert!(reason.contains("mlp_only_layers"))
        }
        other => panic!("{other:?}"),
    }
    match c.check_moe_layer(2) {
        Err(MoeError::NotMoeLayer { layer: 2, reason }) => {
            assert!(reason.contains("decoder_sparse_step"))
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        c.check_moe_layer(8),
        Err(MoeError::LayerOutOfRange {
            layer: 8,
            num_layers: 8
        })
    ));
}

#[test]
fn activations_and_model_types() {
    let mut v = json!({"model_type": "olmoe", "hidden_size": 8, "intermediate_size": 4,
        "num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 1});
    assert_eq!(parse(&v).unwrap().moe.activation.kind, ActivationKind::Silu);
    for act in ["gelu_pytorch_tanh", "gelu_new"] {
        v["hidden_act"] = json!(act);
        let a = parse(&v).unwrap().moe.activation;
        assert_eq!(a.kind, ActivationKind::GeluTanh);
        assert!(a.gated);
    }
    for act in ["gelu", "relu"] {
        v["hidden_act"] = json!(act);
        match parse(&v) {
            Err(MoeError::UnsupportedModel(m)) => assert!(m.contains(act), "{m}"),
            other => panic!("{act}: {other:?}"),
        }
    }
    v["hidden_act"] = json!("silu");

    // Unknown model types are refused by name, unless a family is given.
    v["model_type"] = json!("llama");
    match parse(&v) {
        Err(e @ MoeError::UnsupportedModel(_)) => assert!(e.to_string().contains("`llama`"), "{e}"),
        other => panic!("{other:?}"),
    }
    let c = HfModelConfig::from_json_str_as(&v.to_string(), Some(ModelFamily::Olmoe)).unwrap();
    assert_eq!(c.family, ModelFamily::Olmoe);
    assert_eq!(c.model_type, "llama");

    // Aliases of the DeepSeek-V3 block.
    for t in ["kimi_k2", "glm4_moe"] {
        let c = parse(&deepseek(t, json!({"n_group": 1, "topk_group": 1}))).unwrap();
        assert_eq!(c.family, ModelFamily::DeepseekV3);
    }
    assert_eq!(
        "qwen3_moe".parse::<ModelFamily>(),
        Ok(ModelFamily::Qwen3Moe)
    );
    assert!("llama".parse::<ModelFamily>().is_err());
}

#[test]
fn config_field_errors() {
    let good = json!({"model_type": "qwen3_moe", "hidden_size": 8, "moe_intermediate_size": 4,
        "num_experts": 4, "num_experts_per_tok": 2, "num_hidden_layers": 2});
    parse(&good).unwrap();
    let expect = |v: Value, needles: &[&str]| {
        let e = parse(&v).expect_err("must fail");
        assert!(matches!(e, MoeError::InvalidConfig(_)), "{e:?}");
        let msg = e.to_string();
        for n in needles {
            assert!(msg.contains(n), "`{msg}` lacks `{n}`");
        }
    };
    let with = |k: &str, x: Value| {
        let mut v = good.clone();
        v[k] = x;
        v
    };
    let without = |k: &str| {
        let mut v = good.clone();
        v.as_object_mut().unwrap().remove(k);
        v
    };
    expect(
        without("num_experts"),
        &["`num_experts`", "missing", "config.json"],
    );
    expect(without("hidden_size"), &["`hidden_size`", "missing"]);
    expect(without("num_hidden_layers"), &["`num_hidden_layers`"]);
    expect(
        with("num_experts", json!("4")),
        &["`num_experts`", "integer"],
    );
    expect(with("num_experts", json!(-1)), &["`num_experts`"]);
    expect(
        with("num_experts", json!(0)),
        &["`num_experts`", "no MoE layers"],
    );
    expect(with("norm_topk_prob", json!(1)), &["`norm_topk_prob`"]);
    expect(
        with("decoder_sparse_step", json!(0)),
        &["`decoder_sparse_step`"],
    );
    expect(
        with("mlp_only_layers", json!([1, "x"])),
        &["`mlp_only_layers`"],
    );
    expect(with("num_experts_per_tok", json!(5)), &["top_k"]);
    expect(without("model_type"), &["`model_type`"]);
    expect(
        deepseek(
            "deepseek_v2",
            json!({"topk_method": "group_limited_greedy", "n_group": 4}),
        ),
        &["`topk_group`", "group_limited_greedy"],
    );
    expect(
        deepseek(
            "deepseek_v2",
            json!({"topk_method": "group_limited_greedy", "n_group": 3, "topk_group": 1}),
        ),
        &["n_group"],
    );
    expect(
        deepseek("deepseek_v2", json!({"moe_layer_freq": 0})),
        &["`moe_layer_freq`"],
    );

    match parse(&deepseek("deepseek_v2", json!({"topk_method": "random"}))) {
        Err(MoeError::UnsupportedModel(m)) => assert!(m.contains("random")),
        other => panic!("{other:?}"),
    }
    match parse(&deepseek("deepseek_v3", json!({"scoring_func": "tanh"}))) {
        Err(MoeError::UnsupportedModel(m)) => assert!(m.contains("tanh")),
        other => panic!("{other:?}"),
    }
    for bad in ["{", "[1, 2]", ""] {
        assert!(
            matches!(
                HfModelConfig::from_json_str(bad),
                Err(MoeError::MalformedFile { .. })
            ),
            "{bad}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Loading

fn to_bf16(v: &[f32]) -> Vec<bf16> {
    v.iter().map(|&x| bf16::from_f32(x)).collect()
}

fn weights_bf16(w: &MoeWeights<f32>) -> MoeWeights<bf16> {
    MoeWeights {
        router: to_bf16(&w.router),
        biases: w.biases.clone(),
        correction_bias: w.correction_bias.clone(),
        gate_up: to_bf16(&w.gate_up),
        down: to_bf16(&w.down),
        shared: w
            .shared
            .iter()
            .map(|s| moe_kernels::cpu::layer::SharedExpertWeights {
                gate_up: to_bf16(&s.gate_up),
                down: to_bf16(&s.down),
                gate: s.gate.as_deref().map(to_bf16),
            })
            .collect(),
    }
}

/// Every family, per-expert and fused, unsharded and sharded, bf16/f16/f32: the loaded config equals the
/// family's documented semantics and the loaded weights equal what was written, fused gate rows first.
#[test]
fn load_every_family_and_layout() {
    let mut rng = common::rng("load_every_family_and_layout");
    for (n, &family) in ModelFamily::ALL.iter().enumerate() {
        for fused in [false, true] {
            let dtype = [DType::BF16, DType::F32, DType::F16][(n + fused as usize) % 3];
            let m = TinyModel::new(&mut rng, family, dtype, fused);
            let shards = if (n + fused as usize).is_multiple_of(2) {
                1
            } else {
                3
            };
            let dir = m.write_temp("load", shards);
            let what = format!("{family} fused={fused} {dtype} shards={shards}");

            let model = HfModel::open(dir.path()).unwrap();
            assert_eq!(model.checkpoint().is_sharded(), shards > 1, "{what}");
            assert_eq!(model.config().family, family, "{what}");
            assert_eq!(model.config().moe, m.moe, "{what}");
            assert_eq!(
                model.config().moe_layers(),
                m.layers.keys().copied().collect::<Vec<_>>(),
                "{what}"
            );
            for (&l, want) in &m.layers {
                let keys = model.block_keys(l).unwrap();
                assert_eq!(keys.prefix, m.prefix(l), "{what}");
                let layout = match (family, m.fused) {
                    (ModelFamily::Llama4, true) => ExpertLayout::FusedTransposed,
                    (ModelFamily::Dbrx, _) => ExpertLayout::Stacked2d,
                    (ModelFamily::GptOss, _) => ExpertLayout::FusedTransposedInterleaved,
                    (_, true) => ExpertLayout::Fused,
                    (_, false) => ExpertLayout::PerExpert,
                };
                assert_eq!(keys.layout, layout, "{what}");
                assert_eq!(model.stored_dtype(l).unwrap(), dtype, "{what}");
                let got = model.moe_weights::<f32>(l).unwrap();
                assert!(got == *want, "{what}: layer {l} weights differ");
                let got = model.moe_weights::<bf16>(l).unwrap();
                assert!(
                    got == weights_bf16(want),
                    "{what}: layer {l} bf16 weights differ"
                );
                model.cpu_layer::<bf16>(l).unwrap();
            }
            if let Some(d) = m.dense_layer {
                assert!(matches!(
                    model.cpu_layer::<f32>(d),
                    Err(MoeError::NotMoeLayer { .. })
                ));
            }
            load_moe_layer::<f32>(dir.path(), m.moe_layer_no()).unwrap();
        }
    }
}

/// Multimodal checkpoints: the config under `text_config`, the language model's keys under
/// `model.language_model.` (transformers 5) or `language_model.model.`.
#[test]
fn load_multimodal_layouts() {
    let mut rng = common::rng("load_multimodal_layouts");
    for (n, root) in ["model.language_model.", "language_model.model."]
        .into_iter()
        .enumerate()
    {
        let family = [ModelFamily::Qwen3Moe, ModelFamily::DeepseekV3][n];
        let m = TinyModel::new(&mut rng, family, DType::BF16, n == 1).into_multimodal(root);
        let dir = m.write_temp("multimodal", 1 + n);
        let model = HfModel::open(dir.path()).unwrap();
        let what = format!("{family} under {root}");
        assert_eq!(model.config().family, family, "{what}");
        assert_eq!(model.config().moe, m.moe, "{what}");
        assert_eq!(model.config().torch_dtype.as_deref(), Some("bfloat16"));
        for (&l, want) in &m.layers {
            let keys = model.block_keys(l).unwrap();
            assert_eq!(
                keys.prefix,
                m.prefix(l).replacen("model.", root, 1),
                "{what}"
            );
            assert!(
                model.moe_weights::<f32>(l).unwrap() == *want,
                "{what}: layer {l}"
            );
        }
    }
}

#[test]
fn checkpoint_reads_stored_types() {
    let mut rng = common::rng("checkpoint_reads_stored_types");
    let m = TinyModel::new(&mut rng, ModelFamily::DeepseekV3, DType::BF16, false);
    let dir = m.write_temp("types", 2);
    let ck = Checkpoint::open(dir.path()).unwrap();
    assert_eq!(ck.files().len(), 2);
    assert_eq!(ck.keys().len(), m.tensors.len());
    let key = "model.layers.1.mlp.gate.weight";
    let t = ck.tensor(key).unwrap();
    assert_eq!(t.dtype(), DType::BF16);
    assert_eq!(t.shape(), &[E, H]);
    let meta = ck
        .meta("model.layers.1.mlp.gate.e_score_correction_bias")
        .unwrap();
    assert_eq!(meta.dtype, Some(DType::F32));
    assert_eq!(meta.stored, "F32");
    assert_eq!(meta.shape, vec![E]);
    // Shape checks on read.
    match ck.read::<f32>(key, &[H, E]) {
        Err(MoeError::TensorShape {
            key: k,
            expected,
            found,
            ..
        }) => {
            assert_eq!(k, key);
            assert_eq!(expected, vec![H, E]);
            assert_eq!(found, vec![E, H]);
        }
        other => panic!("{other:?}"),
    }
}

// ---------------------------------------------------------------------------------------------------
// Error paths

/// Build `m` after `edit`, write it with `shards`, open, load its first MoE layer: the error.
fn load_err(m: &TinyModel, shards: usize, layer: usize) -> (MoeError, TempDir) {
    let dir = m.write_temp("err", shards);
    let e = HfModel::open(dir.path())
        .and_then(|model| model.moe_weights::<f32>(layer))
        .expect_err("loading must fail");
    (e, dir)
}

fn tiny(family: ModelFamily, fused: bool) -> TinyModel {
    let mut rng = common::rng("tiny");
    TinyModel::new(&mut rng, family, DType::BF16, fused)
}

#[test]
fn missing_tensor_names_key_and_file() {
    for shards in [1, 2] {
        let mut m = tiny(ModelFamily::Mixtral, false);
        let key = "model.layers.0.block_sparse_moe.experts.3.w3.weight";
        assert!(m.tensors.remove(key).is_some());
        let (e, dir) = load_err(&m, shards, 0);
        match &e {
            MoeError::MissingTensor { key: k, file } => {
                assert_eq!(k, key);
                let f = if shards == 1 {
                    "model.safetensors"
                } else {
                    "model.safetensors.index.json"
                };
                assert!(file.ends_with(f), "{file}");
                assert!(
                    file.starts_with(&dir.path().display().to_string()),
                    "{file}"
                );
            }
            other => panic!("{other:?}"),
        }
        assert!(e.to_string().contains(key));
    }

    // Listed by the index but absent from the shard: the error names the shard.
    let m = tiny(ModelFamily::Qwen3Moe, false);
    let dir = m.write_temp("err-shard", 2);
    let key = "model.layers.1.mlp.experts.5.down_proj.weight";
    let mut shard0 = BTreeMap::new();
    let mut shard1 = BTreeMap::new();
    for (n, (k, t)) in m.tensors.iter().enumerate() {
        if k != key {
            if n % 2 == 0 { &mut shard0 } else { &mut shard1 }.insert(k.clone(), t.clone());
        }
    }
    write_safetensors(&dir.path().join(hf_util::shard_name(0, 2)), &shard0);
    write_safetensors(&dir.path().join(hf_util::shard_name(1, 2)), &shard1);
    match HfModel::open(dir.path()).unwrap().moe_weights::<f32>(1) {
        Err(MoeError::MissingTensor { key: k, file }) => {
            assert_eq!(k, key);
            assert!(
                file.ends_with(".safetensors") && file.contains("model-0000"),
                "{file}"
            );
        }
        other => panic!("{other:?}"),
    }

    // The router, the correction bias, the shared expert and its gate, the fused down projection.
    let cases: [(ModelFamily, bool, &str); 6] = [
        (ModelFamily::Olmoe, false, "model.layers.0.mlp.gate.weight"),
        (
            ModelFamily::Mixtral,
            false,
            "model.layers.0.block_sparse_moe.gate.weight",
        ),
        (
            ModelFamily::DeepseekV3,
            false,
            "model.layers.1.mlp.gate.e_score_correction_bias",
        ),
        (
            ModelFamily::DeepseekV2,
            true,
            "model.layers.1.mlp.shared_experts.up_proj.weight",
        ),
        (
            ModelFamily::Qwen2Moe,
            false,
            "model.layers.1.mlp.shared_expert_gate.weight",
        ),
        (
            ModelFamily::Qwen3Moe,
            true,
            "model.layers.1.mlp.experts.down_proj",
        ),
    ];
    for (family, fused, key) in cases {
        let mut m = tiny(family, fused);
        assert!(m.tensors.remove(key).is_some(), "{key}");
        let layer = m.moe_layer_no();
        match load_err(&m, 1, layer).0 {
            MoeError::MissingTensor { key: k, .. } => assert_eq!(k, key),
            other => panic!("{family}: {other:?}"),
        }
    }
}

#[test]
fn wrong_shapes_name_expected_and_found() {
    type Case = (ModelFamily, bool, &'static str, Vec<usize>, Vec<usize>);
    let cases: [Case; 5] = [
        (
            ModelFamily::Olmoe,
            false,
            "model.layers.0.mlp.gate.weight",
            vec![E, H + 1],
            vec![E, H],
        ),
        (
            ModelFamily::Mixtral,
            false,
            "model.layers.1.block_sparse_moe.experts.7.w2.weight",
            vec![I, H],
            vec![H, I],
        ),
        // A fused gate-up stored transposed ([E, H, 2I], as some checkpoints do) is refused.
        (
            ModelFamily::Qwen3Moe,
            true,
            "model.layers.1.mlp.experts.gate_up_proj",
            vec![E, H, 2 * I],
            vec![E, 2 * I, H],
        ),
        (
            ModelFamily::DeepseekV3,
            false,
            "model.layers.1.mlp.gate.e_score_correction_bias",
            vec![E + 1],
            vec![E],
        ),
        (
            ModelFamily::Qwen2Moe,
            false,
            "model.layers.1.mlp.shared_expert.down_proj.weight",
            vec![H, 21],
            vec![H, 20],
        ),
    ];
    for (family, fused, key, found, expected) in cases {
        let mut m = tiny(family, fused);
        let n: usize = found.iter().product();
        m.tensors.insert(
            key.to_string(),
            Stored::float(DType::BF16, found.clone(), &vec![0.5; n]),
        );
        let layer = if key.contains("layers.1") { 1 } else { 0 };
        let (e, _dir) = load_err(&m, 1, layer);
        match &e {
            MoeError::TensorShape {
                key: k,
                expected: x,
                found: f,
                ..
            } => {
                assert_eq!(k, key);
                assert_eq!(x, &expected);
                assert_eq!(f, &found);
            }
            other => panic!("{family}: {other:?}"),
        }
        let msg = e.to_string();
        assert!(
            msg.contains(key) && msg.contains(&format!("{expected:?}")),
            "{msg}"
        );
    }
}

#[test]
fn unsupported_stored_dtype() {
    let mut m = tiny(ModelFamily::Olmoe, false);
    let key = "model.layers.0.mlp.experts.2.up_proj.weight";
    m.tensors.insert(
        key.to_string(),
        Stored {
            dtype: Dtype::I64,
            shape: vec![I, H],
            bytes: vec![0; I * H * 8],
        },
    );
    match load_err(&m, 2, 0).0 {
        MoeError::TensorDType { key: k, found, .. } => {
            assert_eq!(k, key);
            assert_eq!(found, "I64");
        }
        other => panic!("{other:?}"),
    }
    // FP8 expert weights (as in the official DeepSeek-V3 release) are refused too, and stored_dtype says so.
    let mut m = tiny(ModelFamily::DeepseekV3, false);
    let key = "model.layers.1.mlp.experts.0.gate_proj.weight";
    m.tensors.insert(
        key.to_string(),
        Stored {
            dtype: Dtype::F8_E4M3,
            shape: vec![I, H],
            bytes: vec![0; I * H],
        },
    );
    let dir = m.write_temp("fp8", 1);
    let model = HfModel::open(dir.path()).unwrap();
    for e in [
        model.stored_dtype(1).unwrap_err(),
        model.moe_weights::<bf16>(1).unwrap_err(),
    ] {
        match e {
            MoeError::TensorDType { key: k, found, .. } => {
                assert_eq!(k, key);
                assert_eq!(found, "F8_E4M3");
            }
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn dense_and_out_of_range_layers() {
    let m = tiny(ModelFamily::DeepseekV2, false);
    let dir = m.write_temp("dense", 1);
    let model = HfModel::open(dir.path()).unwrap();
    match model.moe_weights::<f32>(0) {
        Err(e @ MoeError::NotMoeLayer { layer: 0, .. }) => {
            assert!(e.to_string().contains("first_k_dense_replace"), "{e}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        model.moe_weights::<f32>(3),
        Err(MoeError::LayerOutOfRange {
            layer: 3,
            num_layers: 3
        })
    ));
    assert!(matches!(
        model.stored_dtype(99),
        Err(MoeError::LayerOutOfRange { .. })
    ));
}

#[test]
fn bad_directories_and_files() {
    let m = tiny(ModelFamily::Qwen3Moe, false);

    // No directory at all.
    let gone = std::env::temp_dir().join("moe-test-no-such-dir-xyz");
    assert!(matches!(HfModel::open(&gone), Err(MoeError::Io { .. })));

    // No config.json.
    let dir = m.write_temp("noconfig", 1);
    std::fs::remove_file(dir.path().join("config.json")).unwrap();
    match HfModel::open(dir.path()) {
        Err(MoeError::Io { path, .. }) => assert!(path.ends_with("config.json")),
        other => panic!("{other:?}"),
    }

    // Malformed config.json.
    std::fs::write(dir.path().join("config.json"), "{\"model_type\": ").unwrap();
    match HfModel::open(dir.path()) {
        Err(MoeError::MalformedFile { path, .. }) => assert!(path.ends_with("config.json")),
        other => panic!("{other:?}"),
    }

    // No weights.
    let dir = m.write_temp("noweights", 1);
    std::fs::remove_file(dir.path().join("model.safetensors")).unwrap();
    assert!(matches!(
        HfModel::open(dir.path()),
        Err(MoeError::NoCheckpoint { .. })
    ));

    // Corrupt safetensors.
    std::fs::write(
        dir.path().join("model.safetensors"),
        b"\x10\0\0\0\0\0\0\0{not json",
    )
    .unwrap();
    assert!(matches!(
        HfModel::open(dir.path()),
        Err(MoeError::MalformedFile { .. })
    ));
    std::fs::write(dir.path().join("model.safetensors"), b"abc").unwrap();
    assert!(matches!(
        HfModel::open(dir.path()),
        Err(MoeError::MalformedFile { .. })
    ));

    // A shard named by the index is missing: an I/O error naming it, when it is first read.
    let dir = m.write_temp("noshard", 2);
    let shard = dir.path().join(hf_util::shard_name(1, 2));
    std::fs::remove_file(&shard).unwrap();
    let model = HfModel::open(dir.path()).unwrap();
    match model.moe_weights::<f32>(1) {
        Err(MoeError::Io { path, .. }) => assert_eq!(path, shard),
        other => panic!("{other:?}"),
    }

    // Malformed indexes.
    let index = dir.path().join("model.safetensors.index.json");
    for bad in [
        "not json",
        "{\"metadata\": {}}",
        "{\"weight_map\": {\"a\": 3}}",
        "{\"weight_map\": {\"a\": \"../model.safetensors\"}}",
        "{\"weight_map\": {\"a\": \"/etc/passwd\"}}",
    ] {
        std::fs::write(&index, bad).unwrap();
        match Checkpoint::open(dir.path()) {
            Err(MoeError::MalformedFile { path, .. }) => assert_eq!(path, index, "{bad}"),
            other => panic!("{bad}: {other:?}"),
        }
    }
}
