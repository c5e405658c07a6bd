//! The model types that reuse a family's block with their own config rules (Kimi-K2, GLM-4.5,
//! dots1, DeepSeek-V3.2, Qwen3-Next, Qwen3.5-MoE), MiniMax-M2 and Granite (with and without its
//! shared MLP): a tiny checkpoint in the hub's key
//! layout and config spelling, its parsed config against the rules of transformers' code (written
//! out here by hand), and `moe run` against the float64 oracle.

mod common;
mod hf_util;

use hf_util::{TempDir, TinyModel};
use moe_kernels::config::{ActivationKind, GroupScore, GroupedTopK, MoeConfig, ScoringFunc};
use moe_kernels::hf::{HfModel, ModelFamily};
use moe_kernels::DType;
use serde_json::{json, Value};

/// One case: the base family's tiny model with its config edited to the model type's spelling,
/// the config the rules give, and the MoE layers.
struct Case {
    name: &'static str,
    model: TinyModel,
    want: MoeConfig,
    moe_layers: Vec<usize>,
}

fn edit(config: &mut Value, set: Value, remove: &[&str]) {
    for (k, v) in set.as_object().unwrap() {
        config[k] = v.clone();
    }
    for k in remove {
        config.as_object_mut().unwrap().remove(*k);
    }
}

/// A family's tiny model as it is: its own config spelling and expectations.
fn as_is(
    rng: &mut rand::rngs::StdRng,
    name: &'static str,
    family: ModelFamily,
    moe_layers: Vec<usize>,
) -> Case {
    let model = TinyModel::new(rng, family, DType::BF16, false);
    Case {
        name,
        want: model.moe.clone(),
        model,
        moe_layers,
    }
}

fn cases(rng: &mut rand::rngs::StdRng) -> Vec<Case> {
    let mut out = vec![];
    let groups = |n_group, topk_group| {
        Some(GroupedTopK {
            n_group,
            topk_group,
            score: GroupScore::SumTop2,
        })
    };

    // Kimi-K2: DeepSeek-V3's keys and remote code; one group, its own scaling factor.
    let mut m = TinyModel::new(rng, ModelFamily::DeepseekV3, DType::BF16, false);
    edit(
        &mut m.config,
        json!({"model_type": "kimi_k2", "n_group": 1, "topk_group": 1,
            "routed_scaling_factor": 2.827, "architectures": ["DeepseekV3ForCausalLM"]}),
        &[],
    );
    let mut want = m.moe.clone();
    want.routing.grouping = groups(1, 1);
    want.routing.routed_scaling_factor = 2.827;
    out.push(Case {
        name: "kimi_k2",
        model: m,
        want,
        moe_layers: vec![1, 2],
    });

    // GLM-4.5: sigmoid + bias + top-2-sum groups hard-wired; norm_topk_prob defaults to true;
    // groups default to 1; moe_layer_freq is not read (2 would make layer 1 dense).
    let mut m = TinyModel::new(rng, ModelFamily::DeepseekV3, DType::BF16, false);
    edit(
        &mut m.config,
        json!({"model_type": "glm4_moe", "moe_layer_freq": 2}),
        &[
            "scoring_func",
            "topk_method",
            "n_group",
            "topk_group",
            "norm_topk_prob",
        ],
    );
    let mut want = m.moe.clone();
    want.routing.grouping = groups(1, 1);
    out.push(Case {
        name: "glm4_moe",
        model: m,
        want,
        moe_layers: vec![1, 2],
    });

    // dots1: its hub file writes scoring_func "noaux_tc", which transformers does not read; groups
    // null or absent mean one group.
    let mut m = TinyModel::new(rng, ModelFamily::DeepseekV3, DType::BF16, false);
    edit(
        &mut m.config,
        json!({"model_type": "dots1", "scoring_func": "noaux_tc", "n_group": null}),
        &["topk_group"],
    );
    let mut want = m.moe.clone();
    want.routing.grouping = groups(1, 1);
    out.push(Case {
        name: "dots1",
        model: m,
        want,
        moe_layers: vec![1, 2],
    });

    // DeepSeek-V3.2: mlp_layer_types wins over first_k_dense_replace (2 would make layer 1 dense).
    let mut m = TinyModel::new(rng, ModelFamily::DeepseekV3, DType::BF16, false);
    edit(
        &mut m.config,
        json!({"model_type": "deepseek_v32", "first_k_dense_replace": 2,
            "mlp_layer_types": ["dense", "sparse", "sparse"]}),
        &[],
    );
    let want = m.moe.clone();
    out.push(Case {
        name: "deepseek_v32",
        model: m,
        want,
        moe_layers: vec![1, 2],
    });

    // Qwen3-Next: the Qwen2-MoE block; norm_topk_prob defaults to true.
    let mut m = TinyModel::new(rng, ModelFamily::Qwen2Moe, DType::BF16, false);
    edit(
        &mut m.config,
        json!({"model_type": "qwen3_next"}),
        &["norm_topk_prob"],
    );
    let mut want = m.moe.clone();
    want.routing.renormalize = true;
    out.push(Case {
        name: "qwen3_next",
        model: m,
        want,
        moe_layers: vec![1, 2],
    });

    // Qwen3.5-MoE: multimodal (text_config, model.language_model. keys), experts fused on the hub,
    // always renormalised, every layer an MoE layer whatever norm_topk_prob and mlp_only_layers say.
    let m = TinyModel::new(rng, ModelFamily::Qwen2Moe, DType::BF16, true);
    let mut m = m.into_multimodal("model.language_model.");
    edit(&mut m.config, json!({"model_type": "qwen3_5_moe"}), &[]);
    m.config["text_config"]["model_type"] = json!("qwen3_5_moe_text");
    let mut want = m.moe.clone();
    want.routing.renormalize = true;
    out.push(Case {
        name: "qwen3_5_moe",
        model: m,
        want,
        moe_layers: vec![0, 1, 2],
    });

    // Granite: router.layer, input_linear/output_linear; granitemoeshared adds the shared_mlp
    // beside the block (the tiny model's own type), plain granitemoe has none.
    out.push(as_is(
        rng,
        "granitemoeshared",
        ModelFamily::GraniteMoe,
        vec![0, 1],
    ));
    let mut m = TinyModel::new(rng, ModelFamily::GraniteMoe, DType::BF16, true);
    edit(
        &mut m.config,
        json!({"model_type": "granitemoe"}),
        &["shared_intermediate_size"],
    );
    for w in m.layers.values_mut() {
        w.shared.clear();
    }
    let mut want = m.moe.clone();
    want.shared_experts.clear();
    out.push(Case {
        name: "granitemoe",
        model: m,
        want,
        moe_layers: vec![0, 1],
    });

    // Hunyuan: per-layer moe_topk lists (equal), router at gate.wg, shared_mlp.
    out.push(as_is(
        rng,
        "hunyuan_v1_moe",
        ModelFamily::HunyuanV1Moe,
        vec![0, 1],
    ));

    // ERNIE 4.5: softmax with a selection bias stored [1, E], its own layer placement; a second
    // case with every other layer (interval 2: layers 1 and 3 of 0..=3 would be MoE, the tiny
    // model has layers 1 and 2, so only 1) checks the interval rule.
    out.push(as_is(
        rng,
        "ernie4_5_moe",
        ModelFamily::Ernie45Moe,
        vec![1, 2],
    ));
    let mut m = TinyModel::new(rng, ModelFamily::Ernie45Moe, DType::BF16, false);
    edit(&mut m.config, json!({"moe_layer_interval": 2}), &[]);
    m.layers.remove(&2);
    let want = m.moe.clone();
    out.push(Case {
        name: "ernie4_5_moe interval 2",
        model: m,
        want,
        moe_layers: vec![1],
    });

    // MiniMax-M2: its own family (bias beside the router, spread wide in the tiny model).
    out.push(as_is(rng, "minimax_m2", ModelFamily::MinimaxM2, vec![0, 1]));

    // Llama 4: sigmoid top-1 scaling the expert input, transposed fused experts, a shared expert;
    // text-only (model.layers.) and as the hub stores it (multimodal, language_model.model.).
    out.push(as_is(
        rng,
        "llama4_text per-expert",
        ModelFamily::Llama4,
        vec![1, 3],
    ));
    let m = TinyModel::new(rng, ModelFamily::Llama4, DType::BF16, true);
    let want = m.moe.clone();
    out.push(Case {
        name: "llama4_text",
        model: m,
        want,
        moe_layers: vec![1, 3],
    });
    let m = TinyModel::new(rng, ModelFamily::Llama4, DType::BF16, true);
    let mut m = m.into_multimodal("language_model.model.");
    edit(
        &mut m.config,
        json!({"model_type": "llama4", "architectures": ["Llama4ForConditionalGeneration"]}),
        &[],
    );
    let want = m.moe.clone();
    out.push(Case {
        name: "llama4",
        model: m,
        want,
        moe_layers: vec![1, 3],
    });
    // Without moe_layers, every interleave_moe_layer_step-th layer (2: layers 1 and 3), and top-2.
    let mut m = TinyModel::new(rng, ModelFamily::Llama4, DType::BF16, true);
    edit(
        &mut m.config,
        json!({"interleave_moe_layer_step": 2, "num_experts_per_tok": 2}),
        &["moe_layers"],
    );
    let mut want = m.moe.clone();
    want.routing.top_k = 2;
    m.moe.routing.top_k = 2;
    out.push(Case {
        name: "llama4_text step 2, top-2",
        model: m,
        want,
        moe_layers: vec![1, 3],
    });

    // DBRX: ffn_config, 2-D w1/v1/w2; the sum-normalised weights, and null: none.
    out.push(as_is(rng, "dbrx", ModelFamily::Dbrx, vec![0, 1]));
    let mut m = TinyModel::new(rng, ModelFamily::Dbrx, DType::BF16, true);
    m.config["ffn_config"]["moe_normalize_expert_weights"] = Value::Null;
    m.moe.routing.renormalize = false;
    let want = m.moe.clone();
    out.push(Case {
        name: "dbrx moe_normalize_expert_weights null",
        model: m,
        want,
        moe_layers: vec![0, 1],
    });

    // Phi-3.5-MoE: the sparse mixer (a wide jitter in the tiny model, and the released 0.01).
    out.push(as_is(rng, "phimoe", ModelFamily::Phimoe, vec![0, 1]));
    let mut m = TinyModel::new(rng, ModelFamily::Phimoe, DType::BF16, false);
    m.config["router_jitter_noise"] = json!(0.01);
    m.moe.routing.scoring = ScoringFunc::SparseMixer { jitter_eps: 0.01 };
    let want = m.moe.clone();
    out.push(Case {
        name: "phimoe jitter 0.01",
        model: m,
        want,
        moe_layers: vec![0, 1],
    });

    // gpt-oss: router and expert biases, the clamped SwiGLU on interleaved gate/up columns; the
    // released alpha and limit (alpha from its default), and other values read from the config
    // (a tighter limit, so the clamps bite more often).
    out.push(as_is(rng, "gpt_oss", ModelFamily::GptOss, vec![0, 1]));
    let mut m = TinyModel::new(rng, ModelFamily::GptOss, DType::F32, true);
    m.config["swiglu_limit"] = json!(3.0);
    m.config["swiglu_alpha"] = json!(1.25);
    m.moe.activation.kind = ActivationKind::ClampedSilu {
        alpha: 1.25,
        limit: 3.0,
    };
    let want = m.moe.clone();
    out.push(Case {
        name: "gpt_oss swiglu_alpha 1.25, swiglu_limit 3",
        model: m,
        want,
        moe_layers: vec![0, 1],
    });
    out
}

#[test]
fn related_model_types_parse_and_run_against_the_oracle() {
    let mut rng = common::rng("related_model_types");
    for case in cases(&mut rng) {
        let Case {
            name,
            model: m,
            want,
            moe_layers,
        } = case;
        let dir = m.write_temp("family", 1);
        let model = HfModel::open(dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        let cfg = model.config();
        assert_eq!(cfg.moe, want, "{name}: config");
        assert_eq!(cfg.moe_layers(), moe_layers, "{name}: MoE layers");

        let work = TempDir::new("family-io");
        let input = work.path().join("in.safetensors");
        let output = work.path().join("out.safetensors");
        for (&l, w) in &m.layers {
            let t = 6;
            let (x, oracle) = loop {
                let x = common::randn(&mut rng, t * want.hidden_size, 1.0);
                if let Some(o) = hf_util::oracle_output(&want, w, &common::f64s(&x)) {
                    break (x, o);
                }
            };
            hf_util::write_hidden_states(&input, &x, t);
            let got = hf_util::moe_run_cpu(dir.path(), l, "f32", &input, &output);
            common::assert_close(&format!("{name} layer {l}"), &got, &oracle, 1e-4);
        }
    }
}

/// gpt-oss's tiny bf16 checkpoint with `moe run --device cuda` (the emulated GPU when there is no
/// real one): router bias, expert biases and the clamped SwiGLU on the GPU kernels, against the
/// float64 oracle on the input as rounded to bf16, at bf16's tolerance.
#[test]
fn gpt_oss_runs_on_the_gpu_against_the_oracle() {
    let mut rng = common::rng("gpt_oss_runs_on_the_gpu");
    if common::gpu("hf_families", "gpt_oss_runs_on_the_gpu_against_the_oracle").is_none() {
        return;
    }
    let m = TinyModel::new(&mut rng, ModelFamily::GptOss, DType::BF16, false);
    let dir = m.write_temp("gpt-oss-cuda", 1);
    let work = TempDir::new("gpt-oss-cuda-io");
    let input = work.path().join("in.safetensors");
    let output = work.path().join("out.safetensors");
    let mut checked = 0;
    for (&l, w) in &m.layers {
        let t = 6;
        let (x, want) = loop {
            let x = hf_util::round_to(
                DType::BF16,
                &common::randn(&mut rng, t * m.moe.hidden_size, 1.0),
            );
            if let Some(o) = hf_util::oracle_output(&m.moe, w, &common::f64s(&x)) {
                break (x, o);
            }
        };
        hf_util::write_hidden_states(&input, &x, t);
        let got = hf_util::moe_run_gpu_bf16(dir.path(), l, &input, &output);
        common::assert_close(
            &format!("gpt_oss layer {l} on the GPU (bf16)"),
            &got,
            &want,
            3e-2,
        );
        checked += 1;
    }
    assert!(checked > 0);
}

/// MiniMax-M2's hub keys that transformers never reads are accepted at the values its code implies
/// and refused otherwise; an unknown model type names the supported ones.
#[test]
fn minimax_m2_extra_keys_and_unknown_types() {
    let mut rng = common::rng("minimax_m2_extra_keys");
    let m = TinyModel::new(&mut rng, ModelFamily::MinimaxM2, DType::BF16, false);
    let parse = |v: &Value| moe_kernels::hf::HfModelConfig::from_json_str(&v.to_string());
    parse(&m.config).unwrap();
    for (k, v) in [
        ("scoring_func", json!("softmax")),
        ("use_routing_bias", json!(false)),
        ("shared_intermediate_size", json!(64)),
    ] {
        let mut c = m.config.clone();
        c[k] = v;
        assert!(
            matches!(parse(&c), Err(moe_kernels::MoeError::UnsupportedModel(_))),
            "{k}"
        );
    }
    // Hunyuan layers with different k or expert sizes are refused, not guessed.
    let h = TinyModel::new(&mut rng, ModelFamily::HunyuanV1Moe, DType::BF16, false);
    for (k, v) in [
        ("moe_topk", json!([3, 2])),
        ("moe_intermediate_size", json!(8)),
    ] {
        let mut c = h.config.clone();
        c[k] = v;
        assert!(
            matches!(parse(&c), Err(moe_kernels::MoeError::UnsupportedModel(_))),
            "{k}"
        );
    }
    let e = TinyModel::new(&mut rng, ModelFamily::Ernie45Moe, DType::BF16, false);
    let mut c = e.config.clone();
    c["use_bias"] = json!(true);
    assert!(matches!(
        parse(&c),
        Err(moe_kernels::MoeError::UnsupportedModel(_))
    ));
    // DBRX's p-norm for p other than 1, and Phi-3.5-MoE with another k than its router's 2.
    let d = TinyModel::new(&mut rng, ModelFamily::Dbrx, DType::BF16, true);
    let mut c = d.config.clone();
    c["ffn_config"]["moe_normalize_expert_weights"] = json!(2.0);
    let msg = parse(&c).unwrap_err().to_string();
    assert!(msg.contains("moe_normalize_expert_weights"), "{msg}");
    let p = TinyModel::new(&mut rng, ModelFamily::Phimoe, DType::BF16, false);
    let mut c = p.config.clone();
    c["num_experts_per_tok"] = json!(1);
    let msg = parse(&c).unwrap_err().to_string();
    assert!(msg.contains("num_experts_per_tok"), "{msg}");
    let mut c = m.config.clone();
    c["model_type"] = json!("gpt_oss_next");
    let msg = parse(&c).unwrap_err().to_string();
    assert!(
        msg.contains("gpt_oss_next") && msg.contains("minimax_m2") && msg.contains("qwen3_next"),
        "{msg}"
    );
}
