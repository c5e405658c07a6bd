//! One layer's MoE block from a Hugging Face checkpoint, packed into the crate's fused layout.
//!
//! Key names, with `P = model.layers.{L}.mlp` (Mixtral: `model.layers.{L}.block_sparse_moe`, or `mlp`
//! when the checkpoint uses that name; in a multimodal checkpoint `model.language_model.layers.{L}` or
//! `language_model.model.layers.{L}` in place of `model.layers.{L}`):
//!
//! | tensor | key | shape |
//! |---|---|---|
//! | router | `P.gate.weight` | `[E, H]` |
//! | expert `e` gate / up / down | `P.experts.{e}.gate_proj` / `up_proj` / `down_proj` `.weight` (Mixtral: `w1` / `w3` / `w2`) | `[I, H]` / `[I, H]` / `[H, I]` |
//! | or, all experts fused | `P.experts.gate_up_proj` (gate rows first), `P.experts.down_proj` | `[E, 2I, H]`, `[E, H, I]` |
//! | correction bias (`noaux_tc`) | `P.gate.e_score_correction_bias` | `[E]` |
//! | Qwen2-MoE shared expert | `P.shared_expert.{gate_proj,up_proj,down_proj}.weight`, `P.shared_expert_gate.weight` | `[Is, H]`, `[Is, H]`, `[H, Is]`, `[1, H]` |
//! | DeepSeek shared experts | `P.shared_experts.{gate_proj,up_proj,down_proj}.weight` | `[Is, H]`, `[Is, H]`, `[H, Is]` |
//! | Llama 4 (`P = ...layers.{L}.feed_forward`) | `P.router.weight`; `P.experts.gate_up_proj`, `P.experts.down_proj` (each expert transposed); `P.shared_expert.*` | `[E, H]`; `[E, H, 2I]`, `[E, I, H]`; as DeepSeek's |
//! | DBRX (`P = transformer.blocks.{L}.ffn`) | `P.router.layer.weight`; `P.experts.mlp.w1` (gate), `v1` (up), `w2` (down, each expert transposed) | `[E, H]`; `[E * I, H]` each |
//! | Phi-3.5-MoE | Mixtral's | |
//! | gpt-oss MXFP4 | `P.experts.gate_up_proj_blocks` / `_scales` (gate and up rows interleaved), `P.experts.down_proj_blocks` / `_scales` (`U8`); router and biases as below | `[E, 2I, H/32, 16]` / `[E, 2I, H/32]`, `[E, H, I/32, 16]` / `[E, H, I/32]` |
//! | gpt-oss | `P.router.weight`, `P.router.bias`; `P.experts.gate_up_proj` (transposed, gate and up columns interleaved), `P.experts.down_proj` (transposed); `P.experts.gate_up_proj_bias`, `P.experts.down_proj_bias` | `[E, H]`, `[E]`; `[E, H, 2I]`, `[E, I, H]`; `[E, 2I]`, `[E, H]` |
//!
//! The per-expert gate and up projections are stacked into one `[2I, H]` matrix per expert, gate rows
//! first, as [`MoeWeights::gate_up`] wants. The correction bias and gpt-oss's biases are read as `f32`; everything else is
//! converted to the weight type `W`.

use super::checkpoint::Checkpoint;
use super::config::{HfModelConfig, ModelFamily, WeightQuant};
use crate::config::MoeConfig;
use crate::cpu::layer::{CpuMoeLayer, ExpertStorage, MoeBiases, MoeWeights, SharedExpertWeights};
use crate::dtype::{DType, Element};
use crate::error::{MoeError, Result};
use crate::quant::{
    check_scales, e8m0_to_f32, expand_scales, CodeFormat, QuantExperts, StoredScales,
};
use crate::view::checked_mul;
use std::path::{Path, PathBuf};

/// How a checkpoint stores a layer's routed experts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpertLayout {
    /// One gate, up and down matrix per expert (`experts.{e}.gate_proj.weight`, ...).
    PerExpert,
    /// All experts in two stacked tensors (`experts.gate_up_proj` `[E, 2I, H]`, `experts.down_proj`
    /// `[E, H, I]`).
    Fused,
    /// Llama 4: the fused tensors with each expert's matrix transposed (`experts.gate_up_proj`
    /// `[E, H, 2I]`, gate columns first; `experts.down_proj` `[E, I, H]`).
    FusedTransposed,
    /// DBRX: three 2-D tensors with every expert's `I` rows stacked, `experts.mlp.w1` (gate),
    /// `v1` (up) and `w2` (down, each expert's transposed), all `[E * I, H]`.
    Stacked2d,
    /// gpt-oss in bf16: Llama 4's transposed fused tensors with the gate and up columns
    /// interleaved (`experts.gate_up_proj` `[E, H, 2I]`: column `2j` gate `j`, `2j + 1` up `j`;
    /// `experts.down_proj` `[E, I, H]`), plus the biases `experts.gate_up_proj_bias` `[E, 2I]`
    /// (interleaved the same way) and `experts.down_proj_bias` `[E, H]`.
    FusedTransposedInterleaved,
    /// gpt-oss in MXFP4 (`quant_method: mxfp4`): the experts in Linear orientation, gate and up
    /// rows interleaved, as e2m1 codes `experts.gate_up_proj_blocks` `[E, 2I, H / 32, 16]` (`U8`,
    /// two codes a byte, the low nibble first) with e8m0 scales `experts.gate_up_proj_scales`
    /// `[E, 2I, H / 32]` (`U8`), and `experts.down_proj_blocks` `[E, H, I / 32, 16]` with
    /// `experts.down_proj_scales` `[E, H, I / 32]`; the biases as in
    /// [`ExpertLayout::FusedTransposedInterleaved`]. `H` and `I` must be multiples of 32.
    Mxfp4Interleaved,
}

/// The resolved key names of one layer's MoE block in one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MoeBlockKeys {
    /// The layer.
    pub layer: usize,
    /// The family whose names are used.
    pub family: ModelFamily,
    /// The block's key prefix (`model.layers.3.mlp`).
    pub prefix: String,
    /// How the routed experts are stored.
    pub layout: ExpertLayout,
}

impl MoeBlockKeys {
    /// Find layer `layer`'s MoE block in `ckpt`: check that the config makes it an MoE layer, find the
    /// block prefix from the router's key, and the expert layout from which expert keys exist.
    pub fn resolve(ckpt: &Checkpoint, cfg: &HfModelConfig, layer: usize) -> Result<Self> {
        cfg.check_moe_layer(layer)?;
        let names: &[&str] = match cfg.family {
            ModelFamily::Mixtral
            | ModelFamily::MinimaxM2
            | ModelFamily::GraniteMoe
            | ModelFamily::Phimoe => &["block_sparse_moe", "mlp"],
            ModelFamily::Llama4 => &["feed_forward"],
            ModelFamily::Dbrx => &["ffn"],
            _ => &["mlp"],
        };
        let roots: &[&str] = match cfg.family {
            ModelFamily::Dbrx => &["transformer.blocks"],
            _ => &LAYER_ROOTS,
        };
        let router = router_name(cfg.family);
        let prefixes: Vec<String> = roots
            .iter()
            .flat_map(|root| names.iter().map(move |n| format!("{root}.{layer}.{n}")))
            .collect();
        let prefix = prefixes
            .iter()
            .find(|p| ckpt.contains(&format!("{p}.{router}")))
            .ok_or_else(|| missing(ckpt, &format!("{}.{router}", prefixes[0])))?
            .clone();
        let mut keys = MoeBlockKeys {
            layer,
            family: cfg.family,
            prefix,
            layout: ExpertLayout::Fused,
        };
        keys.layout = if cfg.family == ModelFamily::Dbrx {
            ExpertLayout::Stacked2d
        } else if cfg.family == ModelFamily::GptOss {
            if ckpt.contains(&keys.mxfp4_gate_up()[0]) {
                ExpertLayout::Mxfp4Interleaved
            } else {
                ExpertLayout::FusedTransposedInterleaved
            }
        } else if !ckpt.contains(&keys.fused_gate_up()) {
            ExpertLayout::PerExpert
        } else if cfg.family == ModelFamily::Llama4 {
            ExpertLayout::FusedTransposed
        } else {
            ExpertLayout::Fused
        };
        Ok(keys)
    }

    /// The router weight `[E, H]` (`P.gate.weight`; Granite `P.router.layer.weight`, Hunyuan
    /// `P.gate.wg.weight`).
    pub fn router(&self) -> String {
        format!("{}.{}", self.prefix, router_name(self.family))
    }

    /// The score correction bias `[E]` (`P.gate.e_score_correction_bias`; MiniMax-M2 keeps it beside
    /// the router, `P.e_score_correction_bias`).
    pub fn correction_bias(&self) -> String {
        match self.family {
            ModelFamily::MinimaxM2 => format!("{}.e_score_correction_bias", self.prefix),
            ModelFamily::Ernie45Moe => {
                format!("{}.moe_statics.e_score_correction_bias", self.prefix)
            }
            _ => format!("{}.gate.e_score_correction_bias", self.prefix),
        }
    }

    /// The stored shape of the correction bias of `e` experts: `[E]`; ERNIE `[1, E]`.
    pub fn correction_bias_shape(&self, e: usize) -> Vec<usize> {
        match self.family {
            ModelFamily::Ernie45Moe => vec![1, e],
            _ => vec![e],
        }
    }

    /// The fused gate-up projections `[E, 2I, H]` (`P.experts.gate_up_proj`; Granite
    /// `P.input_linear.weight`).
    pub fn fused_gate_up(&self) -> String {
        match self.family {
            ModelFamily::GraniteMoe => format!("{}.input_linear.weight", self.prefix),
            _ => format!("{}.experts.gate_up_proj", self.prefix),
        }
    }

    /// The fused down projections `[E, H, I]` (`P.experts.down_proj`; Granite
    /// `P.output_linear.weight`).
    pub fn fused_down(&self) -> String {
        match self.family {
            ModelFamily::GraniteMoe => format!("{}.output_linear.weight", self.prefix),
            _ => format!("{}.experts.down_proj", self.prefix),
        }
    }

    /// gpt-oss's router bias `[E]` (`P.router.bias`), gate-up bias `[E, 2I]`
    /// (`P.experts.gate_up_proj_bias`, gate and up interleaved) and down bias `[E, H]`
    /// (`P.experts.down_proj_bias`).
    pub fn biases(&self) -> [String; 3] {
        [
            format!("{}.router.bias", self.prefix),
            format!("{}.experts.gate_up_proj_bias", self.prefix),
            format!("{}.experts.down_proj_bias", self.prefix),
        ]
    }

    /// gpt-oss's MXFP4 gate-up codes and scales (`P.experts.gate_up_proj_blocks`, `_scales`).
    pub fn mxfp4_gate_up(&self) -> [String; 2] {
        ["blocks", "scales"].map(|n| format!("{}.experts.gate_up_proj_{n}", self.prefix))
    }

    /// gpt-oss's MXFP4 down codes and scales (`P.experts.down_proj_blocks`, `_scales`).
    pub fn mxfp4_down(&self) -> [String; 2] {
        ["blocks", "scales"].map(|n| format!("{}.experts.down_proj_{n}", self.prefix))
    }

    /// DBRX's stacked gate, up and down tensors `[E * I, H]` (`P.experts.mlp.w1`, `v1`, `w2`).
    pub fn stacked_2d(&self) -> [String; 3] {
        ["w1", "v1", "w2"].map(|n| format!("{}.experts.mlp.{n}", self.prefix))
    }

    fn expert_names(&self) -> [&'static str; 3] {
        match self.family {
            ModelFamily::Mixtral | ModelFamily::MinimaxM2 | ModelFamily::Phimoe => {
                ["w1", "w3", "w2"]
            }
            _ => ["gate_proj", "up_proj", "down_proj"],
        }
    }

    /// Expert `e`'s gate projection `[I, H]`.
    pub fn expert_gate(&self, e: usize) -> String {
        format!(
            "{}.experts.{e}.{}.weight",
            self.prefix,
            self.expert_names()[0]
        )
    }

    /// Expert `e`'s up projection `[I, H]`.
    pub fn expert_up(&self, e: usize) -> String {
        format!(
            "{}.experts.{e}.{}.weight",
            self.prefix,
            self.expert_names()[1]
        )
    }

    /// Expert `e`'s down projection `[H, I]`.
    pub fn expert_down(&self, e: usize) -> String {
        format!(
            "{}.experts.{e}.{}.weight",
            self.prefix,
            self.expert_names()[2]
        )
    }

    /// The shared expert's module prefix (`P.shared_expert` for Qwen2-MoE, `P.shared_experts` for
    /// DeepSeek), `None` for families without shared experts.
    pub fn shared_prefix(&self) -> Option<String> {
        match self.family {
            ModelFamily::Qwen2Moe => Some(format!("{}.shared_expert", self.prefix)),
            ModelFamily::DeepseekV2 | ModelFamily::DeepseekV3 | ModelFamily::Ernie45Moe => {
                Some(format!("{}.shared_experts", self.prefix))
            }
            ModelFamily::HunyuanV1Moe => Some(format!("{}.shared_mlp", self.prefix)),
            ModelFamily::Llama4 => Some(format!("{}.shared_expert", self.prefix)),
            // A sibling of the routed block: `model.layers.{L}.shared_mlp`.
            ModelFamily::GraniteMoe => {
                let root = self.prefix.rsplit_once('.').map_or("", |(root, _)| root);
                Some(format!("{root}.shared_mlp"))
            }
            _ => None,
        }
    }

    /// The shared expert's stored projections for intermediate size `is` (`up` gate-up rows) and
    /// width `h`: the parts of its gate-up matrix (gate rows first) and its down projection, with
    /// their shapes; `None` for families without shared experts. Separate `gate_proj` and
    /// `up_proj` matrices, or one fused `input_linear` (Granite).
    #[allow(clippy::type_complexity)]
    pub fn shared_tensors(
        &self,
        is: usize,
        up: usize,
        h: usize,
    ) -> Option<(Vec<(String, Vec<usize>)>, (String, Vec<usize>))> {
        let sp = self.shared_prefix()?;
        Some(match self.family {
            ModelFamily::GraniteMoe => (
                vec![(format!("{sp}.input_linear.weight"), vec![up, h])],
                (format!("{sp}.output_linear.weight"), vec![h, is]),
            ),
            _ => (
                vec![
                    (format!("{sp}.gate_proj.weight"), vec![is, h]),
                    (format!("{sp}.up_proj.weight"), vec![is, h]),
                ],
                (format!("{sp}.down_proj.weight"), vec![h, is]),
            ),
        })
    }

    /// The Qwen2-MoE shared expert's sigmoid gate `[1, H]`.
    pub fn shared_gate(&self) -> String {
        format!("{}.shared_expert_gate.weight", self.prefix)
    }

    /// Every tensor of the block with the shape `cfg` gives it, in load order: the router, the
    /// correction bias, the routed experts (fused, or per expert gate, up, down) and the shared
    /// experts' projections. Not the Qwen2-MoE shared gate, stored as `[1, H]` or `[H]`
    /// ([`MoeBlockKeys::shared_gate`]). Lazy, so that an untrusted expert count costs nothing until
    /// its keys are looked at.
    pub fn tensors<'a>(
        &'a self,
        cfg: &'a MoeConfig,
    ) -> impl Iterator<Item = (String, Vec<usize>)> + 'a {
        let (h, i, e) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.routing.num_experts,
        );
        let up = cfg.activation.up_rows(i);
        let router = std::iter::once((self.router(), vec![e, h]));
        let bias = cfg
            .routing
            .correction_bias
            .then(|| (self.correction_bias(), self.correction_bias_shape(e)));
        let fused = match self.layout {
            ExpertLayout::Fused => vec![
                (self.fused_gate_up(), vec![e, up, h]),
                (self.fused_down(), vec![e, h, i]),
            ],
            ExpertLayout::FusedTransposed => vec![
                (self.fused_gate_up(), vec![e, h, up]),
                (self.fused_down(), vec![e, i, h]),
            ],
            ExpertLayout::FusedTransposedInterleaved => {
                let [router_bias, gate_up_bias, down_bias] = self.biases();
                vec![
                    (self.fused_gate_up(), vec![e, h, up]),
                    (self.fused_down(), vec![e, i, h]),
                    (router_bias, vec![e]),
                    (gate_up_bias, vec![e, up]),
                    (down_bias, vec![e, h]),
                ]
            }
            ExpertLayout::Mxfp4Interleaved => {
                let [router_bias, gate_up_bias, down_bias] = self.biases();
                let [gu_blocks, gu_scales] = self.mxfp4_gate_up();
                let [dn_blocks, dn_scales] = self.mxfp4_down();
                vec![
                    (gu_blocks, vec![e, up, h / MXFP4_GROUP, 16]),
                    (gu_scales, vec![e, up, h / MXFP4_GROUP]),
                    (dn_blocks, vec![e, h, i / MXFP4_GROUP, 16]),
                    (dn_scales, vec![e, h, i / MXFP4_GROUP]),
                    (router_bias, vec![e]),
                    (gate_up_bias, vec![e, up]),
                    (down_bias, vec![e, h]),
                ]
            }
            // Saturating: an absurd size then fails the shape check.
            ExpertLayout::Stacked2d => self
                .stacked_2d()
                .into_iter()
                .map(|key| (key, vec![e.saturating_mul(i), h]))
                .collect(),
            ExpertLayout::PerExpert => vec![],
        };
        let per_expert = (0..e)
            .filter(move |_| self.layout == ExpertLayout::PerExpert)
            .flat_map(move |x| {
                [
                    (self.expert_gate(x), vec![i, h]),
                    (self.expert_up(x), vec![i, h]),
                    (self.expert_down(x), vec![h, i]),
                ]
            });
        let shared = cfg.shared_experts.first().and_then(move |sc| {
            let is = sc.intermediate_size;
            let (gate_up, down) = self.shared_tensors(is, cfg.activation.up_rows(is), h)?;
            Some(gate_up.into_iter().chain([down]))
        });
        router
            .chain(bias)
            .chain(fused)
            .chain(per_expert)
            .chain(shared.into_iter().flatten())
    }

    /// The tensor whose stored dtype is taken as the layer's dtype: the first expert's gate (or the fused
    /// gate-up projection).
    pub fn representative(&self) -> String {
        match self.layout {
            ExpertLayout::Fused
            | ExpertLayout::FusedTransposed
            | ExpertLayout::FusedTransposedInterleaved => self.fused_gate_up(),
            ExpertLayout::Mxfp4Interleaved => self.mxfp4_gate_up()[0].clone(),
            ExpertLayout::PerExpert => self.expert_gate(0),
            ExpertLayout::Stacked2d => self.stacked_2d()[0].clone(),
        }
    }
}

/// The router's name under the block prefix: `gate.weight`; Granite `router.layer.weight`,
/// Llama 4 and gpt-oss `router.weight`, Hunyuan `gate.wg.weight`.
fn router_name(family: ModelFamily) -> &'static str {
    match family {
        ModelFamily::GraniteMoe | ModelFamily::Dbrx => "router.layer.weight",
        ModelFamily::Llama4 | ModelFamily::GptOss => "router.weight",
        ModelFamily::HunyuanV1Moe => "gate.wg.weight",
        _ => "gate.weight",
    }
}

/// Where a checkpoint keeps its decoder layers: `model.layers` in a language model; under the
/// language model's prefix in a multimodal one (transformers 5 writes `model.language_model.layers`,
/// earlier releases and some hub checkpoints `language_model.model.layers`).
const LAYER_ROOTS: [&str; 3] = [
    "model.layers",
    "model.language_model.layers",
    "language_model.model.layers",
];

/// The error for a key the checkpoint lacks: the checkpoint's own, which names the file (the single file,
/// or the index) that should have held it.
fn missing(ckpt: &Checkpoint, key: &str) -> MoeError {
    match ckpt.meta(key) {
        Err(e) => e,
        Ok(_) => MoeError::MissingTensor {
            key: key.to_string(),
            file: ckpt.dir().display().to_string(),
        },
    }
}

/// Expert storage the loader fills from a checkpoint ([`ExpertStorage`]): plain elements converted to
/// `W` (`Vec<W>`), or FP8 codes with their scales ([`QuantExperts`]), as the config's
/// `quantization_config` says ([`HfModelConfig::quantization`]).
pub trait LoadExperts: ExpertStorage {
    /// The stored matrices `parts` (keys and shapes, every shape `[..., k]` and already checked)
    /// stacked in order into one storage of `shape` = `[experts, n, k]`.
    fn load(
        ckpt: &Checkpoint,
        quant: Option<&WeightQuant>,
        parts: &mut dyn Iterator<Item = (String, Vec<usize>)>,
        shape: [usize; 3],
    ) -> Result<Self>;

    /// `key`, stored with shape `stored` holding `[experts, k, n]` (each expert's matrix
    /// transposed), as `[experts, n, k]`.
    fn load_transposed(
        ckpt: &Checkpoint,
        quant: Option<&WeightQuant>,
        key: &str,
        stored: &[usize],
        shape: [usize; 3],
    ) -> Result<Self>;

    /// These matrices `[experts, 2n, k]` with their rows interleaved (row `2j` of the first half,
    /// `2j + 1` of the second: gpt-oss's gate and up) reordered into the crate's halves: each
    /// expert's even rows, then its odd rows.
    fn deinterleave_rows(self, shape: [usize; 3]) -> Result<Self>;

    /// MXFP4 matrices `[experts, n, k]` from their codes `blocks` `[experts, n, k / 32, 16]` and
    /// e8m0 scales `scales` `[experts, n, k / 32]`, both `U8` (`keys` `[blocks, scales]`).
    fn load_mxfp4(ckpt: &Checkpoint, keys: [&str; 2], shape: [usize; 3]) -> Result<Self>;

    /// `keys` `[a, b]`, both stored with shape `stored` holding `[experts, n, k]`, as
    /// `[experts, 2n, k]`: each expert's `n` rows of `a`, then its `n` rows of `b`.
    fn load_interleaved(
        ckpt: &Checkpoint,
        quant: Option<&WeightQuant>,
        keys: [&str; 2],
        stored: &[usize],
        shape: [usize; 3],
    ) -> Result<Self>;
}

/// The error for quantized experts in a layout the quantized loader does not read.
fn quantized_layout(key: &str) -> MoeError {
    MoeError::UnsupportedModel(format!(
        "`{key}`: quantized experts are supported stored one matrix per expert only"
    ))
}

impl<W: Element> LoadExperts for Vec<W> {
    fn deinterleave_rows(self, [_, n, k]: [usize; 3]) -> Result<Self> {
        Ok(deinterleave(&self, n, k))
    }

    fn load_mxfp4(_: &Checkpoint, _: [&str; 2], _: [usize; 3]) -> Result<Self> {
        Err(MoeError::UnsupportedModel(
            "the experts are quantized (mxfp4): load them as QuantExperts \
             (HfModel::quantized_cpu_layer)"
                .into(),
        ))
    }

    fn load_transposed(
        ckpt: &Checkpoint,
        quant: Option<&WeightQuant>,
        key: &str,
        stored: &[usize],
        [e, n, k]: [usize; 3],
    ) -> Result<Self> {
        let src: Vec<W> = Self::load(
            ckpt,
            quant,
            &mut std::iter::once((key.to_string(), stored.to_vec())),
            [e, k, n],
        )?;
        let mut out = vec![W::default(); src.len()];
        for (s, d) in src.chunks_exact(k * n).zip(out.chunks_exact_mut(k * n)) {
            for (r, row) in s.chunks_exact(n).enumerate() {
                for (c, &v) in row.iter().enumerate() {
                    d[c * k + r] = v;
                }
            }
        }
        Ok(out)
    }

    fn load_interleaved(
        ckpt: &Checkpoint,
        quant: Option<&WeightQuant>,
        keys: [&str; 2],
        stored: &[usize],
        [e, n, k]: [usize; 3],
    ) -> Result<Self> {
        let [a, b] = keys.map(|key| {
            Self::load(
                ckpt,
                quant,
                &mut std::iter::once((key.to_string(), stored.to_vec())),
                [e, n, k],
            )
        });
        let (a, b) = (a?, b?);
        let mut out = Vec::with_capacity(a.len() + b.len());
        for (ea, eb) in a.chunks_exact(n * k).zip(b.chunks_exact(n * k)) {
            out.extend_from_slice(ea);
            out.extend_from_slice(eb);
        }
        Ok(out)
    }

    fn load(
        ckpt: &Checkpoint,
        quant: Option<&WeightQuant>,
        parts: &mut dyn Iterator<Item = (String, Vec<usize>)>,
        [e, n, k]: [usize; 3],
    ) -> Result<Self> {
        if let Some(q) = quant {
            return Err(MoeError::UnsupportedModel(format!(
                "the experts are quantized ({}): load them as QuantExperts (HfModel::quantized_cpu_layer)",
                q.method
            )));
        }
        let mut out = vec![W::default(); checked_mul(checked_mul(e, n, "experts")?, k, "experts")?];
        stack_parts(&mut out, parts, |key, shape, dst| {
            ckpt.read_into(key, shape, dst)
        })?;
        Ok(out)
    }
}

impl LoadExperts for QuantExperts {
    fn deinterleave_rows(self, [e, n, k]: [usize; 3]) -> Result<Self> {
        let format = self.format();
        QuantExperts::new(
            format,
            [e, n, k],
            self.group(),
            deinterleave(self.codes(), n, format.row_bytes(k)),
            deinterleave(self.scales(), n, k.div_ceil(self.group())),
        )
    }

    fn load_mxfp4(
        ckpt: &Checkpoint,
        [blocks, scales]: [&str; 2],
        [e, n, k]: [usize; 3],
    ) -> Result<Self> {
        let format = CodeFormat::Mxfp4E2M1;
        let groups = k / MXFP4_GROUP;
        let rows = checked_mul(e, n, "experts")?;
        let mut codes = vec![0u8; checked_mul(rows, format.row_bytes(k), "experts")?];
        ckpt.read_codes_into(
            blocks,
            &[e, n, groups, 16],
            format.stored_name(),
            &mut codes,
        )?;
        let mut raw = vec![0u8; checked_mul(rows, groups, "scales")?];
        ckpt.read_codes_into(scales, &[e, n, groups], "U8", &mut raw)?;
        let values: Vec<f32> = raw.into_iter().map(e8m0_to_f32).collect();
        check_scales(scales, &values)?;
        QuantExperts::new(format, [e, n, k], MXFP4_GROUP, codes, values)
    }

    fn load_transposed(
        _: &Checkpoint,
        _: Option<&WeightQuant>,
        key: &str,
        _: &[usize],
        _: [usize; 3],
    ) -> Result<Self> {
        Err(quantized_layout(key))
    }

    fn load_interleaved(
        _: &Checkpoint,
        _: Option<&WeightQuant>,
        keys: [&str; 2],
        _: &[usize],
        _: [usize; 3],
    ) -> Result<Self> {
        Err(quantized_layout(keys[0]))
    }

    fn load(
        ckpt: &Checkpoint,
        quant: Option<&WeightQuant>,
        parts: &mut dyn Iterator<Item = (String, Vec<usize>)>,
        [e, n, k]: [usize; 3],
    ) -> Result<Self> {
        let Some(q) = quant else {
            return Err(MoeError::UnsupportedModel(
                "the config has no quantization_config: the experts are plain weights".into(),
            ));
        };
        let format = q.format();
        if format != CodeFormat::Fp8E4M3 {
            return Err(MoeError::UnsupportedModel(format!(
                "{} experts are read from gpt-oss's *_blocks and *_scales tensors only",
                format.name()
            )));
        }
        let group = q.block.map_or(k, |[_, cols]| cols);
        let rows = checked_mul(e, n, "experts")?;
        let mut codes = vec![0u8; checked_mul(rows, k, "experts")?];
        let mut scales = Vec::with_capacity(checked_mul(rows, k.div_ceil(group), "scales")?);
        stack_parts(&mut codes, parts, |key, shape, dst| {
            let [r, c] = shape[..] else {
                return Err(MoeError::UnsupportedModel(format!(
                    "`{key}`: quantized experts stored fused ({shape:?}) are not supported, only one \
                     matrix per expert"
                )));
            };
            ckpt.read_codes_into(key, shape, format.stored_name(), dst)?;
            let scale_key = q.scale_key(key);
            let meta = ckpt.meta(&scale_key)?;
            let values = ckpt.read::<f32>(&scale_key, &meta.shape)?;
            check_scales(&scale_key, &values)?;
            let stored = StoredScales {
                values: &values,
                shape: &meta.shape,
            };
            scales.extend(expand_scales(&scale_key, stored, [r, c], q.block, group)?);
            Ok(())
        })?;
        QuantExperts::new(format, [e, n, k], group, codes, scales)
    }
}

/// Values per e8m0 scale in MXFP4 (along the input dimension).
const MXFP4_GROUP: usize = 32;

/// `v`, matrices of `n` rows (`n` even) of `k` values each, with each matrix's even rows first,
/// then its odd rows (gpt-oss's interleaved gate and up rows into the crate's gate and up halves;
/// `k = 1` for its bias).
fn deinterleave<T: Copy>(v: &[T], n: usize, k: usize) -> Vec<T> {
    let mut out = Vec::with_capacity(v.len());
    for m in v.chunks_exact(n * k) {
        for parity in [0, 1] {
            for row in m.chunks_exact(k).skip(parity).step_by(2) {
                out.extend_from_slice(row);
            }
        }
    }
    out
}

/// Read the stored matrices `parts` one after another into consecutive chunks of `out`, each as
/// long as its part's element count: `read(key, shape, chunk)` fills one. Parts with more elements
/// than `out` has left are an error (the shapes are checked first, so this means the key lists
/// disagree with the storage's shape).
fn stack_parts<T>(
    out: &mut [T],
    parts: &mut dyn Iterator<Item = (String, Vec<usize>)>,
    mut read: impl FnMut(&str, &[usize], &mut [T]) -> Result<()>,
) -> Result<()> {
    let mut at = 0usize;
    for (key, shape) in parts {
        let len = shape.iter().product::<usize>();
        let chunk = at
            .checked_add(len)
            .and_then(|end| out.get_mut(at..end))
            .ok_or_else(|| {
                MoeError::shape(
                    format!("`{key}`"),
                    "the rows left in the experts' shape",
                    "more",
                )
            })?;
        read(&key, &shape, chunk)?;
        at += len;
    }
    Ok(())
}

/// Load layer `layer`'s MoE block from `ckpt` as described by `cfg`, in the crate's fused layout:
/// the router (and shared gates) converted to `W`, the expert matrices as `S` (plain `Vec<W>`, or
/// [`QuantExperts`] for a quantized checkpoint).
///
/// Errors: [`MoeError::LayerOutOfRange`] / [`MoeError::NotMoeLayer`] for a layer that has no MoE block;
/// [`MoeError::MissingTensor`], [`MoeError::TensorShape`] and [`MoeError::TensorDType`] naming the key and
/// file of a missing, misshapen or unreadable tensor (a scale too); [`MoeError::BadScale`];
/// [`MoeError::UnsupportedModel`] for plain storage of quantized experts or the reverse;
/// [`MoeError::Io`] / [`MoeError::MalformedFile`] for a shard that cannot be read.
pub fn load_moe_weights<W: Element, S: LoadExperts>(
    ckpt: &Checkpoint,
    cfg: &HfModelConfig,
    layer: usize,
) -> Result<MoeWeights<W, S>> {
    let keys = MoeBlockKeys::resolve(ckpt, cfg, layer)?;
    let m = &cfg.moe;
    let quant = cfg.quantization.as_ref();
    let (h, i, e) = (m.hidden_size, m.intermediate_size, m.routing.num_experts);
    let up = m.activation.up_rows(i);

    if keys.layout == ExpertLayout::Mxfp4Interleaved
        && (h % MXFP4_GROUP != 0 || i % MXFP4_GROUP != 0)
    {
        return Err(MoeError::UnsupportedModel(format!(
            "MXFP4 experts need hidden_size and intermediate_size that are multiples of \
             {MXFP4_GROUP}, got {h} and {i}"
        )));
    }
    // Every tensor's stored shape is checked before anything is allocated: the config's sizes are
    // untrusted, and the buffers below are sized by them. Once the shapes match, every buffer is
    // bounded by the bytes the checkpoint's files really hold.
    for (key, shape) in keys.tensors(m) {
        ckpt.check_shape(&key, &shape)?;
    }

    let router = ckpt.read::<W>(&keys.router(), &[e, h])?;
    let correction_bias = if m.routing.correction_bias {
        Some(ckpt.read::<f32>(&keys.correction_bias(), &keys.correction_bias_shape(e))?)
    } else {
        None
    };
    let (gate_up, down) = match keys.layout {
        ExpertLayout::Fused => (
            S::load(
                ckpt,
                quant,
                &mut std::iter::once((keys.fused_gate_up(), vec![e, up, h])),
                [e, up, h],
            )?,
            S::load(
                ckpt,
                quant,
                &mut std::iter::once((keys.fused_down(), vec![e, h, i])),
                [e, h, i],
            )?,
        ),
        ExpertLayout::FusedTransposed => (
            S::load_transposed(ckpt, quant, &keys.fused_gate_up(), &[e, h, up], [e, up, h])?,
            S::load_transposed(ckpt, quant, &keys.fused_down(), &[e, i, h], [e, h, i])?,
        ),
        ExpertLayout::FusedTransposedInterleaved => (
            S::load_transposed(ckpt, quant, &keys.fused_gate_up(), &[e, h, up], [e, up, h])?
                .deinterleave_rows([e, up, h])?,
            S::load_transposed(ckpt, quant, &keys.fused_down(), &[e, i, h], [e, h, i])?,
        ),
        ExpertLayout::Mxfp4Interleaved => {
            if quant.map(WeightQuant::format) != Some(CodeFormat::Mxfp4E2M1) {
                return Err(MoeError::UnsupportedModel(
                    "MXFP4 expert tensors (*_blocks, *_scales) need quantization_config with \
                     quant_method mxfp4"
                        .into(),
                ));
            }
            let [gu_blocks, gu_scales] = keys.mxfp4_gate_up();
            let [dn_blocks, dn_scales] = keys.mxfp4_down();
            (
                S::load_mxfp4(ckpt, [&gu_blocks, &gu_scales], [e, up, h])?
                    .deinterleave_rows([e, up, h])?,
                S::load_mxfp4(ckpt, [&dn_blocks, &dn_scales], [e, h, i])?,
            )
        }
        ExpertLayout::Stacked2d => {
            let [w1, v1, w2] = keys.stacked_2d();
            // The shapes were checked above, so e * i does not overflow.
            let stored = [e * i, h];
            (
                S::load_interleaved(ckpt, quant, [&w1, &v1], &stored, [e, i, h])?,
                S::load_transposed(ckpt, quant, &w2, &stored, [e, h, i])?,
            )
        }
        ExpertLayout::PerExpert => (
            S::load(
                ckpt,
                quant,
                &mut (0..e).flat_map(|x| {
                    [
                        (keys.expert_gate(x), vec![i, h]),
                        (keys.expert_up(x), vec![i, h]),
                    ]
                }),
                [e, up, h],
            )?,
            S::load(
                ckpt,
                quant,
                &mut (0..e).map(|x| (keys.expert_down(x), vec![h, i])),
                [e, h, i],
            )?,
        ),
    };

    let mut shared = Vec::with_capacity(m.shared_experts.len());
    let shared_parts = m.shared_experts.first().and_then(|sc| {
        let is = sc.intermediate_size;
        Some((sc, keys.shared_tensors(is, m.activation.up_rows(is), h)?))
    });
    if let Some((sc, (gate_up_parts, down_part))) = shared_parts {
        let is = sc.intermediate_size;
        let gate_up = S::load(
            ckpt,
            quant,
            &mut gate_up_parts.into_iter(),
            [1, m.activation.up_rows(is), h],
        )?;
        let down = S::load(ckpt, quant, &mut std::iter::once(down_part), [1, h, is])?;
        let gate = if sc.sigmoid_gate {
            let key = keys.shared_gate();
            // `Linear(H, 1)` stores `[1, H]`; accept a plain `[H]` vector too.
            let shape = ckpt.meta(&key)?.shape;
            let want: &[usize] = if shape == [h] { &[h] } else { &[1, h] };
            Some(ckpt.read::<W>(&key, want)?)
        } else {
            None
        };
        shared.push(SharedExpertWeights {
            gate_up,
            down,
            gate,
        });
    }
    if shared.len() != m.shared_experts.len() {
        return Err(MoeError::UnsupportedModel(format!(
            "the config has {} shared experts but the {} layout has {}",
            m.shared_experts.len(),
            cfg.family,
            shared.len()
        )));
    }

    let biases = match keys.layout {
        ExpertLayout::FusedTransposedInterleaved | ExpertLayout::Mxfp4Interleaved => {
            let [router_bias, gate_up_bias, down_bias] = keys.biases();
            Some(MoeBiases {
                router: ckpt.read::<f32>(&router_bias, &[e])?,
                gate_up: deinterleave(&ckpt.read::<f32>(&gate_up_bias, &[e, up])?, up, 1),
                down: ckpt.read::<f32>(&down_bias, &[e, h])?,
            })
        }
        _ => None,
    };

    Ok(MoeWeights {
        router,
        correction_bias,
        gate_up,
        down,
        shared,
        biases,
    })
}

/// A Hugging Face model directory: its parsed `config.json` and its (lazily mapped) checkpoint.
#[derive(Debug)]
pub struct HfModel {
    dir: PathBuf,
    config: HfModelConfig,
    checkpoint: Checkpoint,
}

impl HfModel {
    /// Open `dir`: parse `config.json` and open the checkpoint.
    pub fn open(dir: impl AsRef<Path>) -> Result<Self> {
        Self::open_as(dir, None)
    }

    /// Open `dir` with an explicit family (overriding `model_type`).
    pub fn open_as(dir: impl AsRef<Path>, family: Option<ModelFamily>) -> Result<Self> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            return Err(MoeError::Io {
                path: dir,
                error: std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    "not an existing directory",
                ),
            });
        }
        let config = HfModelConfig::from_file(dir.join("config.json"), family)?;
        let checkpoint = Checkpoint::open(&dir)?;
        Ok(HfModel {
            dir,
            config,
            checkpoint,
        })
    }

    /// The model directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed config.
    pub fn config(&self) -> &HfModelConfig {
        &self.config
    }

    /// The checkpoint.
    pub fn checkpoint(&self) -> &Checkpoint {
        &self.checkpoint
    }

    /// The key names of layer `layer`'s MoE block.
    pub fn block_keys(&self, layer: usize) -> Result<MoeBlockKeys> {
        MoeBlockKeys::resolve(&self.checkpoint, &self.config, layer)
    }

    /// The stored dtype of layer `layer`'s expert weights (of its first expert's gate projection, or of
    /// the fused gate-up tensor); for quantized experts, of the router, the type the layer computes in.
    pub fn stored_dtype(&self, layer: usize) -> Result<DType> {
        let keys = self.block_keys(layer)?;
        let key = if self.is_quantized() {
            keys.router()
        } else {
            keys.representative()
        };
        let meta = self.checkpoint.meta(&key)?;
        meta.dtype.ok_or_else(|| MoeError::TensorDType {
            key,
            file: meta.file.display().to_string(),
            found: meta.stored,
            expected: super::checkpoint::PLAIN_TYPES.into(),
        })
    }

    /// Layer `layer`'s MoE weights converted to `W`, in the crate's fused layout (see
    /// [`load_moe_weights`]).
    pub fn moe_weights<W: Element>(&self, layer: usize) -> Result<MoeWeights<W>> {
        load_moe_weights(&self.checkpoint, &self.config, layer)
    }

    /// Layer `layer`'s MoE block as a validated CPU layer with weights of type `W`.
    pub fn cpu_layer<W: Element>(&self, layer: usize) -> Result<CpuMoeLayer<W>> {
        self.cpu_layer_as(layer)
    }

    /// Layer `layer`'s MoE block with its quantized experts kept quantized ([`QuantExperts`],
    /// dequantized inside the GEMMs), the router in `W`; for a model whose config has a
    /// `quantization_config` ([`HfModelConfig::quantization`]).
    pub fn quantized_cpu_layer<W: Element>(
        &self,
        layer: usize,
    ) -> Result<CpuMoeLayer<W, QuantExperts>> {
        self.cpu_layer_as(layer)
    }

    /// Whether the experts are quantized: load them with [`HfModel::quantized_cpu_layer`].
    pub fn is_quantized(&self) -> bool {
        self.config.quantization.is_some()
    }

    fn cpu_layer_as<W: Element, S: LoadExperts>(&self, layer: usize) -> Result<CpuMoeLayer<W, S>> {
        CpuMoeLayer::new(
            self.config.moe.clone(),
            load_moe_weights(&self.checkpoint, &self.config, layer)?,
        )
    }
}

/// Open the model in `dir` and load layer `layer`'s MoE block as a CPU layer with weights of type `W`:
/// `HfModel::open(dir)?.cpu_layer(layer)`.
pub fn load_moe_layer<W: Element>(dir: impl AsRef<Path>, layer: usize) -> Result<CpuMoeLayer<W>> {
    HfModel::open(dir)?.cpu_layer(layer)
}
