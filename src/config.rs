//! Configuration of an MoE block: routing, expert activation, shared experts.
//!
//! Every knob of the supported model families has a field here, and [`MoeConfig::validate`] rejects every
//! combination the stages cannot compute. Which family uses which setting:
//!
//! | family | scoring | selection | renormalise | scaling | shared experts |
//! |---|---|---|---|---|---|
//! | Mixtral | softmax | top-k | yes | 1.0 | none |
//! | Qwen2-MoE (Qwen1.5-MoE) | softmax | top-k | no (`norm_topk_prob=false`) | 1.0 | one, sigmoid-gated |
//! | Qwen3-MoE | softmax | top-k | yes (`norm_topk_prob=true`) | 1.0 | none |
//! | OLMoE | softmax | top-k | no | 1.0 | none |
//! | DeepSeek-V2 | softmax | top-k, or group-limited greedy (group score = max) | no | `routed_scaling_factor` | `n_shared_experts`, ungated |
//! | DeepSeek-V3 | sigmoid + correction bias | grouped top-k (group score = sum of top-2 biased scores) | yes | 2.5 | one, ungated |
//! | Llama 4 | sigmoid, the weight scaling the expert's input (`scale_input`) | top-k (k = 1) | no | 1.0 | one, ungated |
//! | DBRX | softmax | top-k | yes (`moe_normalize_expert_weights = 1`) | 1.0 | none |
//! | Phi-3.5-MoE | sparse mixer (two masked softmaxes) | the two best logits | no | 1.0 | none |
//! | gpt-oss | softmax of the logits plus a router bias ([`MoeWeights::biases`](crate::cpu::layer::MoeWeights::biases)) | top-k | yes | 1.0 | none |
//!
//! All of them use gated SiLU experts (SwiGLU; gpt-oss a clamped one, [`ActivationKind::ClampedSilu`],
//! with expert biases); gated GELU (tanh) and the non-gated forms serve other
//! families (Switch-style experts, GeGLU models).

use crate::error::{MoeError, Result};

/// How router logits become expert scores.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScoringFunc {
    /// `softmax` over all experts (Mixtral, Qwen, OLMoE, DeepSeek-V2).
    Softmax,
    /// Element-wise `sigmoid` (DeepSeek-V3, Llama 4).
    Sigmoid,
    /// Phi-3.5-MoE's `sparsemixer` at inference: exactly two experts, chosen by logit, each weighted
    /// by a softmax over the experts whose logits lie close to its own.
    ///
    /// With logits `s` and `eps = jitter_eps`: the first expert is `i1 = argmax s` (`m1 = s[i1]`);
    /// expert `j` is masked when `(m1 - s[j]) / max(|s[j]|, m1) > 2 eps`, and
    /// `w1 = 1 / sum over unmasked j of exp(s[j] - m1)`. The second expert is the best of the
    /// others, `i2` (`m2 = s[i2]`), with the same mask around `m2` (on the original `s[j]`), `i1`
    /// left out, and `w2 = 1 / sum over unmasked j != i1 of exp(s[j] - m2)`. A `0 / 0` ratio (a zero
    /// logit equal to the maximum) is not masked. Needs `top_k = 2`, no correction bias and no
    /// grouping; renormalisation and scaling, when asked for, apply to `(w1, w2)` as usual.
    SparseMixer {
        /// The mask threshold `eps` (`router_jitter_noise`), finite and `>= 0`.
        jitter_eps: f32,
    },
}

/// How a group of experts is scored in grouped (group-limited) top-k.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupScore {
    /// The group's best expert score (DeepSeek-V2 `group_limited_greedy`).
    Max,
    /// The sum of the group's two best (bias-corrected) scores; a group of one expert scores that expert
    /// (DeepSeek-V3 `noaux_tc`).
    SumTop2,
}

/// Grouped top-k: experts are split into `n_group` equal contiguous groups; only the experts of the
/// `topk_group` best groups can be chosen.
///
/// Experts of the dropped groups are ineligible, as in vLLM and SGLang. (Hugging Face's reference
/// DeepSeek code sets their choice scores to 0.0 instead, which picks a dropped expert over a kept one
/// only when the kept one's bias-corrected score is negative.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GroupedTopK {
    /// Number of expert groups; must divide the expert count.
    pub n_group: usize,
    /// Number of groups kept per token.
    pub topk_group: usize,
    /// How a group is scored.
    pub score: GroupScore,
}

/// Everything that decides which experts a token goes to, and with what weights.
///
/// Selection: scores `s = scoring(logits)`; choice scores `c = s + bias` when a correction bias is given
/// (it changes which experts are chosen, never their weights); optional grouped restriction; then the `k`
/// experts with the largest choice scores, in descending order, **equal scores resolved in favour of the
/// lower expert index**. Weights: the chosen experts' scores `s`, divided by their sum when
/// `renormalize`, then multiplied by `routed_scaling_factor`. ([`ScoringFunc::SparseMixer`] has its
/// own selection and weights.)
///
/// Where the weights apply: normally each chosen expert's output is multiplied by its weight; with
/// `scale_input` (Llama 4) the expert runs on the token times its weight, `expert(w x)`, and the
/// outputs are summed with weight 1. The experts are nonlinear, so the two differ.
#[derive(Clone, Debug, PartialEq)]
pub struct RoutingConfig {
    /// Number of routed experts `E` (>= 1).
    pub num_experts: usize,
    /// Experts per token `k` (1 <= k <= E). `k = E` with softmax scoring and no renormalisation is the
    /// plain dense mixture.
    pub top_k: usize,
    /// Softmax or sigmoid scoring.
    pub scoring: ScoringFunc,
    /// Whether a per-expert score correction bias (DeepSeek-V3 `e_score_correction_bias`) is part of the
    /// weights. The bias itself is a learned tensor and lives with the weights.
    pub correction_bias: bool,
    /// Grouped top-k, when the model uses it.
    pub grouping: Option<GroupedTopK>,
    /// Divide the `k` chosen weights by their sum (`norm_topk_prob`).
    pub renormalize: bool,
    /// Multiply the final weights by this factor (`routed_scaling_factor`; 1.0 for most families).
    pub routed_scaling_factor: f32,
    /// The weights scale each chosen expert's input rather than its output (Llama 4).
    pub scale_input: bool,
}

impl RoutingConfig {
    /// Plain softmax top-k over `num_experts` experts, with or without renormalisation.
    pub fn softmax_topk(num_experts: usize, top_k: usize, renormalize: bool) -> Self {
        RoutingConfig {
            num_experts,
            top_k,
            scoring: ScoringFunc::Softmax,
            correction_bias: false,
            grouping: None,
            renormalize,
            routed_scaling_factor: 1.0,
            scale_input: false,
        }
    }

    /// The dense mixture: every expert, weighted by its softmax score (`k = E`, no renormalisation).
    pub fn dense_mixture(num_experts: usize) -> Self {
        Self::softmax_topk(num_experts, num_experts, false)
    }

    /// Check every routing setting, naming the first one that is invalid.
    pub fn validate(&self) -> Result<()> {
        let e = self.num_experts;
        if e == 0 {
            return Err(MoeError::InvalidConfig(
                "num_experts must be at least 1".into(),
            ));
        }
        if self.top_k == 0 || self.top_k > e {
            return Err(MoeError::InvalidConfig(format!(
                "top_k must satisfy 1 <= k <= num_experts, got k = {} with {e} experts",
                self.top_k
            )));
        }
        if e > i32::MAX as usize {
            return Err(MoeError::InvalidConfig(format!(
                "num_experts {e} does not fit the i32 expert ids"
            )));
        }
        if !self.routed_scaling_factor.is_finite() || self.routed_scaling_factor <= 0.0 {
            return Err(MoeError::InvalidConfig(format!(
                "routed_scaling_factor must be finite and positive, got {}",
                self.routed_scaling_factor
            )));
        }
        if let ScoringFunc::SparseMixer { jitter_eps } = self.scoring {
            if !jitter_eps.is_finite() || jitter_eps < 0.0 {
                return Err(MoeError::InvalidConfig(format!(
                    "the sparse mixer's jitter_eps must be finite and >= 0, got {jitter_eps}"
                )));
            }
            if self.top_k != 2 {
                return Err(MoeError::InvalidConfig(format!(
                    "sparse mixer routing chooses exactly 2 experts, got top_k = {}",
                    self.top_k
                )));
            }
            if self.correction_bias || self.grouping.is_some() {
                return Err(MoeError::InvalidConfig(
                    "sparse mixer routing takes no correction bias and no grouping".into(),
                ));
            }
        }
        if let Some(g) = &self.grouping {
            if g.n_group == 0 || !e.is_multiple_of(g.n_group) {
                return Err(MoeError::InvalidConfig(format!(
                    "n_group = {} must be at least 1 and divide num_experts = {e}",
                    g.n_group
                )));
            }
            if g.topk_group == 0 || g.topk_group > g.n_group {
                return Err(MoeError::InvalidConfig(format!(
                    "topk_group must satisfy 1 <= topk_group <= n_group, got {} with n_group = {}",
                    g.topk_group, g.n_group
                )));
            }
            let eligible = g.topk_group * (e / g.n_group);
            if self.top_k > eligible {
                return Err(MoeError::InvalidConfig(format!(
                    "top_k = {} exceeds the {eligible} experts in the {} kept groups of {} experts",
                    self.top_k,
                    g.topk_group,
                    e / g.n_group
                )));
            }
        }
        Ok(())
    }
}

/// The element-wise nonlinearity of an expert MLP.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActivationKind {
    /// `silu(x) = x * sigmoid(x)` (SwiGLU when gated).
    Silu,
    /// The tanh approximation of GELU (GeGLU when gated).
    GeluTanh,
    /// gpt-oss's clamped SwiGLU, gated only: with `g = min(gate, limit)` and
    /// `u = clamp(up, -limit, limit)`, the output is `(u + 1) * g * sigmoid(alpha * g)`.
    /// `alpha` must be finite, `limit` finite and positive (gpt-oss: 1.702 and 7.0).
    ClampedSilu {
        /// The sigmoid's gain (`swiglu_alpha`).
        alpha: f32,
        /// The clamp (`swiglu_limit`).
        limit: f32,
    },
}

impl ActivationKind {
    /// Apply the nonlinearity to one value.
    #[inline]
    pub fn apply(self, x: f32) -> f32 {
        match self {
            ActivationKind::Silu => x * crate::cpu::sigmoid(x),
            ActivationKind::GeluTanh => {
                const SQRT_2_OVER_PI: f32 = 0.797_884_6;
                0.5 * x * (1.0 + (SQRT_2_OVER_PI * (x + 0.044_715 * x * x * x)).tanh())
            }
            ActivationKind::ClampedSilu { alpha, limit } => {
                let g = x.min(limit);
                g * crate::cpu::sigmoid(alpha * g)
            }
        }
    }

    /// The gated form on one (gate, up) pair: `apply(gate) * up`, with gpt-oss's clamp and `+ 1`
    /// on `up` for [`ActivationKind::ClampedSilu`].
    #[inline]
    pub fn gated(self, gate: f32, up: f32) -> f32 {
        match self {
            ActivationKind::ClampedSilu { limit, .. } => {
                self.apply(gate) * (up.clamp(-limit, limit) + 1.0)
            }
            _ => self.apply(gate) * up,
        }
    }

    /// The name `moe info` and the errors print.
    pub fn name(self) -> String {
        match self {
            ActivationKind::Silu => "silu".into(),
            ActivationKind::GeluTanh => "gelu (tanh)".into(),
            ActivationKind::ClampedSilu { alpha, limit } => {
                format!("clamped silu (alpha {alpha}, limit {limit})")
            }
        }
    }
}

/// An expert MLP's activation: the nonlinearity and whether it is gated.
///
/// Gated experts have a fused gate-up projection `[2I, H]` (gate rows first, then up rows) and compute
/// `act(gate) * up` ([`ActivationKind::gated`]); non-gated (Switch-style) experts have an up projection
/// `[I, H]` and compute `act(up)`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Activation {
    /// The nonlinearity.
    pub kind: ActivationKind,
    /// Whether the expert is gated (GLU form).
    pub gated: bool,
}

impl Activation {
    /// SwiGLU: gated SiLU, the activation of every family this crate names.
    pub const SWIGLU: Activation = Activation {
        kind: ActivationKind::Silu,
        gated: true,
    };
    /// GeGLU with the tanh GELU.
    pub const GEGLU: Activation = Activation {
        kind: ActivationKind::GeluTanh,
        gated: true,
    };

    /// Rows of the up projection for intermediate size `i`: `2i` when gated, `i` otherwise.
    pub fn up_rows(self, i: usize) -> usize {
        if self.gated {
            // Saturating: an absurd size from an untrusted config then fails the shape checks.
            i.saturating_mul(2)
        } else {
            i
        }
    }
}

impl Activation {
    /// Check the activation's parameters: [`ActivationKind::ClampedSilu`] is gated only, with a
    /// finite `alpha` and a finite positive `limit`.
    pub fn validate(self) -> Result<()> {
        if let ActivationKind::ClampedSilu { alpha, limit } = self.kind {
            if !self.gated {
                return Err(MoeError::InvalidConfig(
                    "the clamped SwiGLU is a gated activation".into(),
                ));
            }
            if !alpha.is_finite() || !limit.is_finite() || limit <= 0.0 {
                return Err(MoeError::InvalidConfig(format!(
                    "the clamped SwiGLU needs a finite alpha and a finite positive limit, got \
                     alpha {alpha}, limit {limit}"
                )));
            }
        }
        Ok(())
    }
}

/// One shared (always-on) expert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SharedExpertConfig {
    /// Its intermediate size (DeepSeek folds `n_shared_experts` experts into one of size
    /// `n_shared_experts * moe_intermediate_size`).
    pub intermediate_size: usize,
    /// Whether its output is scaled by `sigmoid(x . w_gate)` per token (Qwen2-MoE `shared_expert_gate`).
    pub sigmoid_gate: bool,
}

/// A whole MoE block.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeConfig {
    /// Model width `H`.
    pub hidden_size: usize,
    /// Routed experts' intermediate size `I` (`moe_intermediate_size` or `intermediate_size`).
    pub intermediate_size: usize,
    /// Routing.
    pub routing: RoutingConfig,
    /// Expert activation (shared experts use the same one).
    pub activation: Activation,
    /// Shared experts, added to every token's output.
    pub shared_experts: Vec<SharedExpertConfig>,
}

/// Parameter counts of one MoE block (saturating at `u64::MAX` for absurd configs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BlockParams {
    /// Every parameter: router, correction bias, all routed experts, shared experts and their gates.
    pub total: u64,
    /// The parameters one token reads: the router (and bias), its `k` routed experts and the shared
    /// experts.
    pub active_per_token: u64,
}

impl MoeConfig {
    /// How many parameters the block has, and how many one token uses.
    pub fn parameter_counts(&self) -> BlockParams {
        let n = |v: usize| v as u64;
        let (h, i) = (n(self.hidden_size), n(self.intermediate_size));
        let (e, k) = (n(self.routing.num_experts), n(self.routing.top_k));
        let mlp = |i: u64| {
            n(self.activation.up_rows(1))
                .saturating_mul(i)
                .saturating_mul(h)
                .saturating_add(h.saturating_mul(i))
        };
        let router = e
            .saturating_mul(h)
            .saturating_add(if self.routing.correction_bias { e } else { 0 });
        let shared = self.shared_experts.iter().fold(0u64, |acc, s| {
            acc.saturating_add(mlp(n(s.intermediate_size)))
                .saturating_add(if s.sigmoid_gate { h } else { 0 })
        });
        let with = |experts: u64| {
            router
                .saturating_add(experts.saturating_mul(mlp(i)))
                .saturating_add(shared)
        };
        BlockParams {
            total: with(e),
            active_per_token: with(k),
        }
    }

    /// Check every setting, naming the first one that is invalid.
    pub fn validate(&self) -> Result<()> {
        if self.hidden_size == 0 {
            return Err(MoeError::InvalidConfig(
                "hidden_size must be at least 1".into(),
            ));
        }
        if self.intermediate_size == 0 {
            return Err(MoeError::InvalidConfig(
                "intermediate_size must be at least 1".into(),
            ));
        }
        for (i, s) in self.shared_experts.iter().enumerate() {
            if s.intermediate_size == 0 {
                return Err(MoeError::InvalidConfig(format!(
                    "shared expert {i} has intermediate_size 0"
                )));
            }
        }
        self.activation.validate()?;
        self.routing.validate()
    }

    /// Mixtral-8x7B: H 4096, I 14336, 8 experts, top-2, softmax, renormalised.
    pub fn mixtral_8x7b() -> Self {
        MoeConfig {
            hidden_size: 4096,
            intermediate_size: 14336,
            routing: RoutingConfig::softmax_topk(8, 2, true),
            activation: Activation::SWIGLU,
            shared_experts: vec![],
        }
    }

    /// Qwen1.5-MoE-A2.7B (`qwen2_moe`): H 2048, I 1408, 60 experts, top-4, not renormalised, one
    /// sigmoid-gated shared expert of size 5632.
    pub fn qwen2_moe_a2_7b() -> Self {
        MoeConfig {
            hidden_size: 2048,
            intermediate_size: 1408,
            routing: RoutingConfig::softmax_topk(60, 4, false),
            activation: Activation::SWIGLU,
            shared_experts: vec![SharedExpertConfig {
                intermediate_size: 5632,
                sigmoid_gate: true,
            }],
        }
    }

    /// Qwen3-30B-A3B: H 2048, I 768, 128 experts, top-8, renormalised.
    pub fn qwen3_30b_a3b() -> Self {
        MoeConfig {
            hidden_size: 2048,
            intermediate_size: 768,
            routing: RoutingConfig::softmax_topk(128, 8, true),
            activation: Activation::SWIGLU,
            shared_experts: vec![],
        }
    }

    /// DeepSeek-V2-Lite: H 2048, I 1408, 64 experts, top-6, softmax, greedy, not renormalised, two shared
    /// experts folded into one of size 2816.
    pub fn deepseek_v2_lite() -> Self {
        MoeConfig {
            hidden_size: 2048,
            intermediate_size: 1408,
            routing: RoutingConfig::softmax_topk(64, 6, false),
            activation: Activation::SWIGLU,
            shared_experts: vec![SharedExpertConfig {
                intermediate_size: 2 * 1408,
                sigmoid_gate: false,
            }],
        }
    }

    /// DeepSeek-V3: H 7168, I 2048, 256 experts, top-8, sigmoid with correction bias, 8 groups keep 4
    /// (group score = sum of top-2), renormalised, scaling 2.5, one shared expert of size 2048.
    pub fn deepseek_v3() -> Self {
        MoeConfig {
            hidden_size: 7168,
            intermediate_size: 2048,
            routing: RoutingConfig {
                num_experts: 256,
                top_k: 8,
                scoring: ScoringFunc::Sigmoid,
                correction_bias: true,
                grouping: Some(GroupedTopK {
                    n_group: 8,
                    topk_group: 4,
                    score: GroupScore::SumTop2,
                }),
                renormalize: true,
                routed_scaling_factor: 2.5,
                scale_input: false,
            },
            activation: Activation::SWIGLU,
            shared_experts: vec![SharedExpertConfig {
                intermediate_size: 2048,
                sigmoid_gate: false,
            }],
        }
    }

    /// gpt-oss-20b: H 2880, I 2880, 32 experts, top-4, softmax over the chosen logits (softmax
    /// renormalised), the clamped SwiGLU (alpha 1.702, limit 7.0). Its router and expert biases are
    /// weights ([`MoeWeights::biases`](crate::cpu::layer::MoeWeights::biases)).
    pub fn gpt_oss_20b() -> Self {
        MoeConfig {
            hidden_size: 2880,
            intermediate_size: 2880,
            routing: RoutingConfig::softmax_topk(32, 4, true),
            activation: Activation {
                kind: ActivationKind::ClampedSilu {
                    alpha: 1.702,
                    limit: 7.0,
                },
                gated: true,
            },
            shared_experts: vec![],
        }
    }

    /// OLMoE-1B-7B: H 2048, I 1024, 64 experts, top-8, not renormalised.
    pub fn olmoe_1b_7b() -> Self {
        MoeConfig {
            hidden_size: 2048,
            intermediate_size: 1024,
            routing: RoutingConfig::softmax_topk(64, 8, false),
            activation: Activation::SWIGLU,
            shared_experts: vec![],
        }
    }
}
