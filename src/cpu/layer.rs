//! The whole MoE block on the CPU: routing, permutation, grouped GEMMs with the activation, combine and
//! shared experts, from a [`MoeConfig`] and a [`MoeWeights`].
//!
//! Rounding points (where a `bf16`/`f16` forward rounds, matching the GPU pipeline): the scaled
//! gathered rows (with [`RoutingConfig::scale_input`](crate::RoutingConfig::scale_input)), the
//! activated intermediate `[rows, I]`, the down projection `[rows, H]`, and the final output. Router logits, routing
//! weights, the shared experts' sum and every accumulator stay `f32`.

use crate::config::MoeConfig;
use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::expert_map::ExpertMap;
use crate::quant::QuantExperts;
use crate::view::{checked_mul, expect_len, ExpertsRef, MatMut, MatRef};
use std::fmt;

/// How a layer stores its expert matrices (routed and shared): plain elements, `Vec<W>` (the
/// default), or quantized codes with scales, [`QuantExperts`], dequantized inside the GEMMs.
pub trait ExpertStorage: Clone + fmt::Debug + PartialEq + Send + Sync {
    /// These matrices as `[E, N, K]` for the GEMMs, or a [`MoeError::ShapeMismatch`] naming `what`
    /// when they do not have that shape.
    fn rows(&self, what: &str, shape: [usize; 3]) -> Result<impl ExpertRows + '_>;

    /// Ask the system to back these matrices with huge pages, which the GEMMs stream faster (the
    /// layer's constructors call it once; it changes where the values live, never the values). The
    /// default does nothing.
    fn advise_huge_pages(&self) {}
}

impl<W: Element> ExpertStorage for Vec<W> {
    fn rows(&self, what: &str, [e, n, k]: [usize; 3]) -> Result<impl ExpertRows + '_> {
        ExpertsRef::new(what, self, e, n, k)
    }

    fn advise_huge_pages(&self) {
        super::huge_pages::advise(self);
    }
}

impl ExpertStorage for QuantExperts {
    fn rows(&self, what: &str, shape: [usize; 3]) -> Result<impl ExpertRows + '_> {
        if self.shape() != shape {
            return Err(MoeError::shape(
                what,
                format!("{shape:?}"),
                format!("{:?}", self.shape()),
            ));
        }
        Ok(self)
    }

    fn advise_huge_pages(&self) {
        super::huge_pages::advise(self.codes());
        super::huge_pages::advise(self.scales());
    }
}

use super::activation::activate_row;
use super::combine::combine;
use super::fast::CpuBackend;
use super::gemm::ExpertRows;
use super::permute::{gather, permute, permute_mapped};
use super::routing::{route, router_logits, Routing};
use super::{sigmoid, zeroed};

/// Weights of one shared expert; its projections are stored as `S` ([`ExpertStorage`]).
#[derive(Clone, Debug, PartialEq)]
pub struct SharedExpertWeights<W, S = Vec<W>> {
    /// Fused gate-up projection `[2 * Is, H]` (gate rows first) for gated activations, `[Is, H]` otherwise.
    pub gate_up: S,
    /// Down projection `[H, Is]`.
    pub down: S,
    /// Sigmoid gate `[H]` (Qwen2-MoE `shared_expert_gate`), present exactly when the config asks for it.
    pub gate: Option<Vec<W>>,
}

/// Weights of one MoE block, in the crate's fused layout: the router in `W`, the expert matrices
/// (routed and shared) stored as `S` ([`ExpertStorage`]): `Vec<W>` by default, or quantized.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeWeights<W, S = Vec<W>> {
    /// Router `[E, H]`.
    pub router: Vec<W>,
    /// Score correction bias `[E]` (DeepSeek-V3), present exactly when the routing config uses one.
    pub correction_bias: Option<Vec<f32>>,
    /// Routed experts' fused gate-up projections `[E, 2I, H]` (gate rows first; `[E, I, H]` when the
    /// activation is not gated).
    pub gate_up: S,
    /// Routed experts' down projections `[E, H, I]`.
    pub down: S,
    /// Shared experts, one per entry of [`MoeConfig::shared_experts`].
    pub shared: Vec<SharedExpertWeights<W, S>>,
    /// The router's and routed experts' biases (gpt-oss), `None` for the families without.
    pub biases: Option<MoeBiases>,
}

/// gpt-oss's biases, in `f32`: the router's, and the routed experts' projections' (for one rank
/// of an expert-parallel layer, of its local experts, like its `gate_up` and `down`).
#[derive(Clone, Debug, PartialEq)]
pub struct MoeBiases {
    /// Router bias `[E]`, added to the router logits: it changes both which experts are chosen and
    /// their weights (unlike a score correction bias).
    pub router: Vec<f32>,
    /// Routed experts' gate-up bias `[E, 2I]` (gate half first, like `gate_up`'s rows; `[E, I]` when
    /// the activation is not gated), added to the projection before the activation.
    pub gate_up: Vec<f32>,
    /// Routed experts' down bias `[E, H]`, added to each expert's output before its routing weight
    /// multiplies it.
    pub down: Vec<f32>,
}

/// The output of a forward pass.
#[derive(Clone, Debug, PartialEq)]
pub struct MoeOutput<X> {
    /// The block's output `[T, H]`.
    pub hidden: Vec<X>,
    /// The routing decision that produced it.
    pub routing: Routing,
}

/// A validated MoE block ready to run on the CPU: the whole layer, or one rank's share of an
/// expert-parallel layer ([`CpuMoeLayer::with_expert_map`]).
#[derive(Clone, Debug)]
pub struct CpuMoeLayer<W, S = Vec<W>> {
    config: MoeConfig,
    weights: MoeWeights<W, S>,
    expert_map: Option<ExpertMap>,
    backend: CpuBackend,
}

impl<W: Element, S: ExpertStorage> CpuMoeLayer<W, S> {
    /// Validate `config` and every weight's shape against it.
    pub fn new(config: MoeConfig, weights: MoeWeights<W, S>) -> Result<Self> {
        check_weights(&config, &weights)?;
        advise_huge_pages(&weights);
        Ok(CpuMoeLayer {
            config,
            weights,
            expert_map: None,
            backend: CpuBackend::default(),
        })
    }

    /// One rank of an expert-parallel layer: `weights` hold the router of all `E` experts and the
    /// routed experts of this rank only (`gate_up` `[num_local, 2I, H]`, `down` `[num_local, H, I]`,
    /// in local order), and the shared experts. Its forwards return this rank's partial sum: the
    /// (token, slot) pairs of local experts, plus the shared experts when the map says this rank
    /// adds them; the ranks' partial sums add up to the whole layer.
    ///
    /// Errors: those of [`CpuMoeLayer::new`] for these shapes, and [`MoeError::InvalidConfig`] for
    /// a map of another expert count than the config's.
    pub fn with_expert_map(
        config: MoeConfig,
        weights: MoeWeights<W, S>,
        expert_map: ExpertMap,
    ) -> Result<Self> {
        check_rank_weights(&config, &weights, Some(&expert_map))?;
        advise_huge_pages(&weights);
        Ok(CpuMoeLayer {
            config,
            weights,
            expert_map: Some(expert_map),
            backend: CpuBackend::default(),
        })
    }

    /// This layer with its expert GEMMs on `backend` ([`CpuBackend::Fast`] by default).
    pub fn with_backend(mut self, backend: CpuBackend) -> Self {
        self.backend = backend;
        self
    }

    /// The backend of the expert GEMMs.
    pub fn backend(&self) -> CpuBackend {
        self.backend
    }

    /// The configuration.
    pub fn config(&self) -> &MoeConfig {
        &self.config
    }

    /// The expert map of a rank's layer, `None` for the whole layer.
    pub fn expert_map(&self) -> Option<&ExpertMap> {
        self.expert_map.as_ref()
    }

    /// The weights.
    pub fn weights(&self) -> &MoeWeights<W, S> {
        &self.weights
    }

    /// Router logits `[T, E]` for hidden states `x` `[T, H]`, with the router bias added when the
    /// weights have one.
    pub fn router_logits<X: Element>(&self, x: MatRef<'_, X>) -> Result<Vec<f32>> {
        let (e, h) = (self.config.routing.num_experts, self.config.hidden_size);
        x.expect_shape("hidden states", x.rows(), h)?;
        let mut logits = vec![0f32; checked_mul(x.rows(), e, "router logits")?];
        let w = MatRef::new("router weight", &self.weights.router, e, h)?;
        router_logits(
            x,
            w,
            &mut MatMut::new("router logits", &mut logits, x.rows(), e)?,
        )?;
        if let Some(b) = &self.weights.biases {
            for row in logits.chunks_mut(e) {
                for (l, &b) in row.iter_mut().zip(&b.router) {
                    *l += b;
                }
            }
        }
        Ok(logits)
    }

    /// The full forward: route `x` `[T, H]` with the router, then run the experts.
    pub fn forward<X: Element>(&self, x: MatRef<'_, X>) -> Result<MoeOutput<X>> {
        let logits = self.router_logits(x)?;
        let logits = MatRef::new(
            "router logits",
            &logits,
            x.rows(),
            self.config.routing.num_experts,
        )?;
        self.forward_with_logits(x, logits)
    }

    /// The forward from caller-given router logits `[T, E]` (including the router bias, if any).
    pub fn forward_with_logits<X: Element>(
        &self,
        x: MatRef<'_, X>,
        logits: MatRef<'_, f32>,
    ) -> Result<MoeOutput<X>> {
        logits.expect_shape("router logits", x.rows(), self.config.routing.num_experts)?;
        let routing = route(
            &self.config.routing,
            logits,
            self.weights.correction_bias.as_deref(),
        )?;
        let hidden = self.forward_routed(x, &routing)?;
        Ok(MoeOutput { hidden, routing })
    }

    /// The experts' part of the forward for a routing decision made elsewhere: returns `[T, H]`.
    pub fn forward_routed<X: Element>(
        &self,
        x: MatRef<'_, X>,
        routing: &Routing,
    ) -> Result<Vec<X>> {
        let cfg = &self.config;
        let (h, i, e, k) = (
            cfg.hidden_size,
            cfg.intermediate_size,
            cfg.routing.num_experts,
            cfg.routing.top_k,
        );
        let t = x.rows();
        x.expect_shape("hidden states", t, h)?;
        routing.validate(e)?;
        if routing.num_tokens != t || routing.top_k != k {
            return Err(MoeError::shape(
                "routing",
                format!("[{t}, {k}] (tokens, top_k)"),
                format!("[{}, {}]", routing.num_tokens, routing.top_k),
            ));
        }
        let perm = match &self.expert_map {
            Some(map) => permute_mapped(routing.ids_view(), map, 1)?,
            None => permute(routing.ids_view(), e, 1)?,
        };
        // The routed experts this layer holds: all, or the rank's local ones.
        let e = perm.num_experts();
        let rows = perm.num_rows();
        let offsets = perm.expert_offsets();

        let mut gathered = zeroed::<X>(checked_mul(rows, h, "gathered activations")?);
        gather(
            x,
            &perm,
            &mut MatMut::new("gathered activations", &mut gathered, rows, h)?,
        )?;
        if cfg.routing.scale_input {
            scale_rows(&mut gathered, h, &perm, &routing.weights);
        }
        let gathered = MatRef::new("gathered activations", &gathered, rows, h)?;

        let gate_up = self
            .weights
            .gate_up
            .rows("expert gate_up weights", [e, cfg.activation.up_rows(i), h])?;
        let down_w = self.weights.down.rows("expert down weights", [e, h, i])?;
        let down = match &self.weights.biases {
            None => self.experts(gathered, offsets, gate_up, down_w)?,
            Some(b) => self.biased_experts(gathered, offsets, gate_up, down_w, b)?,
        };

        let adds_shared = self
            .expert_map
            .as_ref()
            .is_none_or(ExpertMap::shared_experts);
        let shared = if cfg.shared_experts.is_empty() || !adds_shared {
            None
        } else {
            Some(shared_experts_on(
                self.backend,
                cfg,
                x,
                &self.weights.shared,
            )?)
        };
        let mut out = zeroed::<X>(checked_mul(t, h, "output")?);
        // Inputs already scaled: the outputs add up with weight 1.
        let ones = cfg.routing.scale_input.then(|| vec![1f32; t * k]);
        let combine_weights = match &ones {
            Some(ones) => MatRef::new("topk_weights", ones, t, k)?,
            None => routing.weights_view(),
        };
        combine(
            MatRef::new("expert outputs", &down, rows, h)?,
            &perm,
            combine_weights,
            shared
                .as_deref()
                .map(|s| MatRef::new("shared expert output", s, t, h))
                .transpose()?,
            &mut MatMut::new("output", &mut out, t, h)?,
        )?;
        Ok(out)
    }
}

impl<W: Element, S: ExpertStorage> CpuMoeLayer<W, S> {
    /// The routed experts' outputs `[rows, H]` on the gathered rows (grouped by `offsets`): the
    /// up GEMM with the activation fused, then the down GEMM.
    fn experts<X: Element>(
        &self,
        gathered: MatRef<'_, X>,
        offsets: &[usize],
        gate_up: impl ExpertRows,
        down_w: impl ExpertRows,
    ) -> Result<Vec<X>> {
        let (rows, h, i) = (
            gathered.rows(),
            self.config.hidden_size,
            self.config.intermediate_size,
        );
        let mut act = zeroed::<X>(checked_mul(rows, i, "expert intermediate")?);
        self.backend.grouped_gemm_activation(
            gathered,
            offsets,
            gate_up,
            self.config.activation,
            &mut MatMut::new("expert intermediate", &mut act, rows, i)?,
        )?;
        let act = MatRef::new("expert intermediate", &act, rows, i)?;
        let mut down = zeroed::<X>(checked_mul(rows, h, "expert outputs")?);
        self.backend.grouped_gemm(
            act,
            offsets,
            down_w,
            &mut MatMut::new("expert outputs", &mut down, rows, h)?,
        )?;
        Ok(down)
    }

    /// [`Self::experts`] with expert biases: each GEMM writes `f32`, its bias is added to the
    /// `f32` values (before the activation, and before the rounding of the outputs), with the same
    /// rounding points. The GEMMs run on the layer's backend; the bias and activation are plain
    /// loops.
    fn biased_experts<X: Element>(
        &self,
        gathered: MatRef<'_, X>,
        offsets: &[usize],
        gate_up: impl ExpertRows,
        down_w: impl ExpertRows,
        biases: &MoeBiases,
    ) -> Result<Vec<X>> {
        let (rows, h, i) = (
            gathered.rows(),
            self.config.hidden_size,
            self.config.intermediate_size,
        );
        let up = self.config.activation.up_rows(i);
        let mut gu = vec![0f32; checked_mul(rows, up, "expert gate_up outputs")?];
        self.backend.grouped_gemm(
            gathered,
            offsets,
            gate_up,
            &mut MatMut::new("expert gate_up outputs", &mut gu, rows, up)?,
        )?;
        let mut act = zeroed::<X>(checked_mul(rows, i, "expert intermediate")?);
        for (ex, span) in offsets.windows(2).enumerate() {
            let bias = &biases.gate_up[ex * up..(ex + 1) * up];
            for r in span[0]..span[1] {
                let row = &mut gu[r * up..(r + 1) * up];
                for (v, &b) in row.iter_mut().zip(bias) {
                    *v += b;
                }
                activate_row(self.config.activation, row, &mut act[r * i..(r + 1) * i]);
            }
        }
        let act = MatRef::new("expert intermediate", &act, rows, i)?;
        let mut y = vec![0f32; checked_mul(rows, h, "expert outputs")?];
        self.backend.grouped_gemm(
            act,
            offsets,
            down_w,
            &mut MatMut::new("expert outputs", &mut y, rows, h)?,
        )?;
        let mut down = zeroed::<X>(y.len());
        for (ex, span) in offsets.windows(2).enumerate() {
            let bias = &biases.down[ex * h..(ex + 1) * h];
            for r in span[0]..span[1] {
                for ((o, &v), &b) in down[r * h..(r + 1) * h]
                    .iter_mut()
                    .zip(&y[r * h..(r + 1) * h])
                    .zip(bias)
                {
                    *o = X::from_f32(v + b);
                }
            }
        }
        Ok(down)
    }
}

/// Multiply each gathered row `[rows, h]` by the routing weight of its (token, slot), rounding to
/// `X` (the input scaling of [`RoutingConfig::scale_input`](crate::RoutingConfig::scale_input));
/// padding rows stay zero.
fn scale_rows<X: Element>(
    gathered: &mut [X],
    h: usize,
    perm: &super::permute::Permutation,
    weights: &[f32],
) {
    for (r, row) in gathered.chunks_mut(h).enumerate() {
        if let Some((token, slot)) = perm.source(r) {
            let w = weights[token * perm.top_k() + slot];
            for v in row {
                *v = X::from_f32(v.to_f32() * w);
            }
        }
    }
}

/// [`ExpertStorage::advise_huge_pages`] on every expert matrix of `weights`, routed and shared.
fn advise_huge_pages<W, S: ExpertStorage>(weights: &MoeWeights<W, S>) {
    let shared = weights.shared.iter().flat_map(|s| [&s.gate_up, &s.down]);
    for storage in [&weights.gate_up, &weights.down].into_iter().chain(shared) {
        storage.advise_huge_pages();
    }
}

/// Validate `config` and every weight's shape against it: the checks of [`CpuMoeLayer::new`], also
/// used by the GPU weights' upload.
pub(crate) fn check_weights<W, S: ExpertStorage>(
    config: &MoeConfig,
    weights: &MoeWeights<W, S>,
) -> Result<()> {
    check_rank_weights(config, weights, None)
}

/// [`check_weights`] for one rank of an expert-parallel layer (`map`), whose routed experts are its
/// local ones.
pub(crate) fn check_rank_weights<W, S: ExpertStorage>(
    config: &MoeConfig,
    weights: &MoeWeights<W, S>,
    map: Option<&ExpertMap>,
) -> Result<()> {
    config.validate()?;
    let (h, i, e) = (
        config.hidden_size,
        config.intermediate_size,
        config.routing.num_experts,
    );
    let local = match map {
        Some(m) if m.num_global() != e => {
            return Err(MoeError::InvalidConfig(format!(
                "an expert map of {} experts for a layer of {e}",
                m.num_global()
            )))
        }
        Some(m) => m.num_local(),
        None => e,
    };
    let up = config.activation.up_rows(i);
    expect_len("router weight", weights.router.len(), &[e, h])?;
    weights
        .gate_up
        .rows("expert gate_up weights", [local, up, h])?;
    weights.down.rows("expert down weights", [local, h, i])?;
    if let Some(b) = &weights.biases {
        expect_len("router bias", b.router.len(), &[e])?;
        expect_len("expert gate_up bias", b.gate_up.len(), &[local, up])?;
        expect_len("expert down bias", b.down.len(), &[local, h])?;
    }
    match (&weights.correction_bias, config.routing.correction_bias) {
        (Some(b), true) => expect_len("correction bias", b.len(), &[e])?,
        (None, false) => {}
        (None, true) => {
            return Err(MoeError::InvalidConfig(
                "the routing config uses a score correction bias but the weights have none".into(),
            ))
        }
        (Some(_), false) => {
            return Err(MoeError::InvalidConfig(
                "the weights have a score correction bias but the routing config does not use one"
                    .into(),
            ))
        }
    }
    check_shared(config, &weights.shared)
}

/// The summed output `[T, H]` (`f32`) of the shared experts of `cfg` on `x` `[T, H]`: for each shared
/// expert, `down(act(gate_up(x)))`, times `sigmoid(x . gate)` per token when it has a gate.
///
/// The intermediate is rounded to `X` like the routed experts'; the sum stays `f32`. The GEMMs run on
/// the reference backend ([`shared_experts_on`] chooses).
pub fn shared_experts<X: Element, W: Element, S: ExpertStorage>(
    cfg: &MoeConfig,
    x: MatRef<'_, X>,
    shared: &[SharedExpertWeights<W, S>],
) -> Result<Vec<f32>> {
    shared_experts_on(CpuBackend::Reference, cfg, x, shared)
}

/// [`shared_experts`] with the GEMMs on `backend`.
pub fn shared_experts_on<X: Element, W: Element, S: ExpertStorage>(
    backend: CpuBackend,
    cfg: &MoeConfig,
    x: MatRef<'_, X>,
    shared: &[SharedExpertWeights<W, S>],
) -> Result<Vec<f32>> {
    cfg.validate()?;
    let (t, h) = (x.rows(), cfg.hidden_size);
    x.expect_shape("hidden states", t, h)?;
    check_shared(cfg, shared)?;
    let mut sum = vec![0f32; checked_mul(t, h, "shared expert output")?];
    let all_rows = [0, t];
    for (n, (sw, sc)) in shared.iter().zip(&cfg.shared_experts).enumerate() {
        let is = sc.intermediate_size;
        let gate_up = sw.gate_up.rows(
            &format!("shared expert {n} gate_up weight"),
            [1, cfg.activation.up_rows(is), h],
        )?;
        let down = sw
            .down
            .rows(&format!("shared expert {n} down weight"), [1, h, is])?;
        let gate = match &sw.gate {
            Some(g) => {
                let g = MatRef::new(&format!("shared expert {n} gate"), g, 1, h)?;
                let mut logit = vec![0f32; t];
                router_logits(
                    x,
                    g,
                    &mut MatMut::new("shared gate logits", &mut logit, t, 1)?,
                )?;
                Some(logit.into_iter().map(sigmoid).collect::<Vec<f32>>())
            }
            None => None,
        };
        let mut mid = zeroed::<X>(checked_mul(t, is, "shared expert intermediate")?);
        backend.grouped_gemm_activation(
            x,
            &all_rows,
            gate_up,
            cfg.activation,
            &mut MatMut::new("shared expert intermediate", &mut mid, t, is)?,
        )?;
        let mid = MatRef::new("shared expert intermediate", &mid, t, is)?;
        let mut y = vec![0f32; checked_mul(t, h, "shared expert output")?];
        backend.grouped_gemm(
            mid,
            &all_rows,
            down,
            &mut MatMut::new("shared expert output", &mut y, t, h)?,
        )?;
        for (r, (srow, yrow)) in sum.chunks_mut(h).zip(y.chunks(h)).enumerate() {
            let g = gate.as_ref().map_or(1.0, |g| g[r]);
            for (s, &v) in srow.iter_mut().zip(yrow) {
                *s += g * v;
            }
        }
    }
    Ok(sum)
}

/// Check the shared experts' weights against the config: count, shapes, and a gate exactly where the
/// config asks for one.
fn check_shared<W, S: ExpertStorage>(
    cfg: &MoeConfig,
    shared: &[SharedExpertWeights<W, S>],
) -> Result<()> {
    if shared.len() != cfg.shared_experts.len() {
        return Err(MoeError::shape(
            "shared experts",
            format!("{} (from the config)", cfg.shared_experts.len()),
            shared.len(),
        ));
    }
    let h = cfg.hidden_size;
    for (n, (sw, sc)) in shared.iter().zip(&cfg.shared_experts).enumerate() {
        let is = sc.intermediate_size;
        sw.gate_up.rows(
            &format!("shared expert {n} gate_up weight"),
            [1, cfg.activation.up_rows(is), h],
        )?;
        sw.down
            .rows(&format!("shared expert {n} down weight"), [1, h, is])?;
        match (&sw.gate, sc.sigmoid_gate) {
            (Some(g), true) => expect_len(&format!("shared expert {n} gate"), g.len(), &[h])?,
            (None, false) => {}
            (gate, _) => {
                return Err(MoeError::InvalidConfig(format!(
                    "shared expert {n}: the config {} a sigmoid gate but the weights {} one",
                    if sc.sigmoid_gate {
                        "asks for"
                    } else {
                        "has no"
                    },
                    if gate.is_some() { "have" } else { "lack" },
                )))
            }
        }
    }
    Ok(())
}
