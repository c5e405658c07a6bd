//! Stage 1, routing: from hidden states or router logits to each token's `k` experts and their weights.
//!
//! The selection rule is documented on [`RoutingConfig`]; in short, choice scores are the scores plus the
//! optional correction bias, grouped top-k keeps the best `topk_group` groups, and the `k` best eligible
//! experts are returned in descending order of choice score, equal scores going to the lower expert index.

use crate::config::{GroupScore, RoutingConfig, ScoringFunc};
use crate::dtype::Element;
use crate::error::{MoeError, Result};
use crate::view::{MatMut, MatRef};
use std::cmp::Ordering;

/// The routing decision for `num_tokens` tokens.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// Number of tokens `T`.
    pub num_tokens: usize,
    /// Experts per token `k`.
    pub top_k: usize,
    /// Chosen experts `[T, k]`, row-major, each row in descending order of choice score.
    pub ids: Vec<i32>,
    /// Their weights `[T, k]`, row-major.
    pub weights: Vec<f32>,
}

impl Routing {
    /// Wrap routing decisions made elsewhere (for example by an engine's own router), checking the shapes,
    /// that every id is in `0..num_experts` and that every weight is finite.
    pub fn from_parts(
        num_tokens: usize,
        top_k: usize,
        ids: Vec<i32>,
        weights: Vec<f32>,
        num_experts: usize,
    ) -> Result<Self> {
        let r = Routing {
            num_tokens,
            top_k,
            ids,
            weights,
        };
        r.validate(num_experts)?;
        Ok(r)
    }

    /// Check shapes, id range and weight finiteness against `num_experts`.
    pub fn validate(&self, num_experts: usize) -> Result<()> {
        MatRef::new("topk_ids", &self.ids, self.num_tokens, self.top_k)?;
        MatRef::new("topk_weights", &self.weights, self.num_tokens, self.top_k)?;
        validate_ids(self.ids_view(), num_experts)?;
        for (i, &w) in self.weights.iter().enumerate() {
            if !w.is_finite() {
                return Err(MoeError::NonFinite {
                    what: "routing weight",
                    token: i / self.top_k,
                    expert: self.ids[i].max(0) as usize,
                    value: w,
                });
            }
        }
        Ok(())
    }

    /// `topk_ids` as a `[T, k]` view.
    pub fn ids_view(&self) -> MatRef<'_, i32> {
        MatRef::new("topk_ids", &self.ids, self.num_tokens, self.top_k)
            .expect("Routing keeps ids of length T * k")
    }

    /// `topk_weights` as a `[T, k]` view.
    pub fn weights_view(&self) -> MatRef<'_, f32> {
        MatRef::new("topk_weights", &self.weights, self.num_tokens, self.top_k)
            .expect("Routing keeps weights of length T * k")
    }
}

/// Check that every id of `topk_ids` `[T, k]` is in `0..num_experts`.
pub fn validate_ids(topk_ids: MatRef<'_, i32>, num_experts: usize) -> Result<()> {
    let k = topk_ids.cols();
    for (i, &id) in topk_ids.data().iter().enumerate() {
        if id < 0 || id as usize >= num_experts {
            return Err(MoeError::ExpertIdOutOfRange {
                token: i / k,
                slot: i % k,
                id: id as i64,
                num_experts,
            });
        }
    }
    Ok(())
}

/// Router logits `[T, E] = x [T, H] @ w_router [E, H]^T`, accumulated in `f32`, written to `out`.
pub fn router_logits<X: Element, W: Element>(
    x: MatRef<'_, X>,
    w_router: MatRef<'_, W>,
    out: &mut MatMut<'_, f32>,
) -> Result<()> {
    if w_router.cols() != x.cols() {
        return Err(MoeError::shape(
            "router weight",
            format!("[E, {}] (H of the hidden states)", x.cols()),
            format!("[{}, {}]", w_router.rows(), w_router.cols()),
        ));
    }
    out.expect_shape("router logits", x.rows(), w_router.rows())?;
    let w: Vec<f32> = w_router.data().iter().map(|v| v.to_f32()).collect();
    let w = MatRef::new("router weight", &w, w_router.rows(), w_router.cols())?;
    let (h, e) = (x.cols(), w.rows());
    super::par_rows(
        out.data_mut(),
        e,
        e * h,
        || vec![0f32; h],
        |xrow, t, orow| {
            for (dst, v) in xrow.iter_mut().zip(x.row(t)) {
                *dst = v.to_f32();
            }
            for (e, o) in orow.iter_mut().enumerate() {
                *o = super::dot_f32(xrow, w.row(e));
            }
        },
    );
    Ok(())
}

/// Route `T` tokens from their router logits `[T, E]`.
///
/// `bias` is the per-expert score correction bias `[E]`, required exactly when
/// `cfg.correction_bias` is set. Errors: invalid config, wrong shapes, a missing or unexpected bias, or
/// any non-finite logit or bias value.
pub fn route(
    cfg: &RoutingConfig,
    logits: MatRef<'_, f32>,
    bias: Option<&[f32]>,
) -> Result<Routing> {
    cfg.validate()?;
    let e = cfg.num_experts;
    if logits.cols() != e {
        return Err(MoeError::shape(
            "router logits",
            format!("[T, {e}]"),
            format!("[{}, {}]", logits.rows(), logits.cols()),
        ));
    }
    check_bias(cfg, bias)?;
    let t = logits.rows();
    let k = cfg.top_k;
    let len = crate::view::checked_mul(t, k, "topk_ids")?;
    let mut ids = vec![0i32; len];
    let mut weights = vec![0f32; len];
    let mut scratch = RowScratch::new(e);
    for tok in 0..t {
        route_row(
            cfg,
            logits.row(tok),
            bias,
            tok,
            &mut scratch,
            &mut ids[tok * k..(tok + 1) * k],
            &mut weights[tok * k..(tok + 1) * k],
        )?;
    }
    Ok(Routing {
        num_tokens: t,
        top_k: k,
        ids,
        weights,
    })
}

fn check_bias(cfg: &RoutingConfig, bias: Option<&[f32]>) -> Result<()> {
    check_bias_len(cfg, bias.map(<[f32]>::len))?;
    if let Some((expert, &value)) = bias
        .into_iter()
        .flatten()
        .enumerate()
        .find(|(_, v)| !v.is_finite())
    {
        return Err(MoeError::NonFinite {
            what: "correction bias",
            token: 0,
            expert,
            value,
        });
    }
    Ok(())
}

/// Check that a correction bias of `bias_len` elements is given exactly when `cfg` uses one, and
/// has one element per expert (shared by the CPU and GPU routers).
pub(crate) fn check_bias_len(cfg: &RoutingConfig, bias_len: Option<usize>) -> Result<()> {
    match (cfg.correction_bias, bias_len) {
        (true, None) => Err(MoeError::InvalidConfig(
            "the routing config uses a score correction bias but none was given".into(),
        )),
        (false, Some(_)) => Err(MoeError::InvalidConfig(
            "a score correction bias was given but the routing config does not use one".into(),
        )),
        (_, Some(len)) if len != cfg.num_experts => Err(MoeError::shape(
            "correction bias",
            format!("[{}]", cfg.num_experts),
            format!("[{len}]"),
        )),
        _ => Ok(()),
    }
}

/// Per-row working memory, reused across tokens.
struct RowScratch {
    scores: Vec<f32>,
    choice: Vec<f32>,
    order: Vec<usize>,
    group_scores: Vec<f32>,
    group_order: Vec<usize>,
}

impl RowScratch {
    fn new(e: usize) -> Self {
        RowScratch {
            scores: vec![0.0; e],
            choice: vec![0.0; e],
            order: Vec::with_capacity(e),
            group_scores: Vec::new(),
            group_order: Vec::new(),
        }
    }
}

/// The routing total order: larger score first, equal scores by lower index.
#[inline]
fn rank_order(scores: &[f32], a: usize, b: usize) -> Ordering {
    scores[b]
        .partial_cmp(&scores[a])
        .expect("routing scores are finite")
        .then(a.cmp(&b))
}

fn route_row(
    cfg: &RoutingConfig,
    logits: &[f32],
    bias: Option<&[f32]>,
    token: usize,
    s: &mut RowScratch,
    ids: &mut [i32],
    weights: &mut [f32],
) -> Result<()> {
    if let Some((expert, &value)) = logits.iter().enumerate().find(|(_, v)| !v.is_finite()) {
        return Err(MoeError::NonFinite {
            what: "router logit",
            token,
            expert,
            value,
        });
    }
    match cfg.scoring {
        ScoringFunc::SparseMixer { jitter_eps } => {
            sparse_mixer_row(logits, jitter_eps, ids, weights);
            return finish_weights(cfg, weights);
        }
        ScoringFunc::Softmax => {
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (sc, &l) in s.scores.iter_mut().zip(logits) {
                *sc = (l - max).exp();
                sum += *sc;
            }
            for sc in s.scores.iter_mut() {
                *sc /= sum;
            }
        }
        ScoringFunc::Sigmoid => {
            for (sc, &l) in s.scores.iter_mut().zip(logits) {
                *sc = super::sigmoid(l);
            }
        }
    }
    for (e, c) in s.choice.iter_mut().enumerate() {
        *c = s.scores[e] + bias.map_or(0.0, |b| b[e]);
    }

    // Eligible experts: all, or those of the best `topk_group` groups.
    s.order.clear();
    match &cfg.grouping {
        None => s.order.extend(0..cfg.num_experts),
        Some(g) => {
            let size = cfg.num_experts / g.n_group;
            s.group_scores.clear();
            for members in s.choice.chunks(size) {
                s.group_scores.push(group_score(g.score, members));
            }
            s.group_order.clear();
            s.group_order.extend(0..g.n_group);
            let gs = &s.group_scores;
            s.group_order.sort_by(|&a, &b| rank_order(gs, a, b));
            for &grp in &s.group_order[..g.topk_group] {
                s.order.extend(grp * size..(grp + 1) * size);
            }
        }
    }
    let choice = &s.choice;
    s.order.sort_by(|&a, &b| rank_order(choice, a, b));

    for (j, &e) in s.order[..cfg.top_k].iter().enumerate() {
        ids[j] = e as i32;
        weights[j] = s.scores[e];
    }
    finish_weights(cfg, weights)
}

/// The chosen weights divided by their sum (when `renormalize` and the sum is positive), then
/// scaled by `routed_scaling_factor`.
fn finish_weights(cfg: &RoutingConfig, weights: &mut [f32]) -> Result<()> {
    if cfg.renormalize {
        let sum: f32 = weights.iter().sum();
        if sum > 0.0 {
            for w in weights.iter_mut() {
                *w /= sum;
            }
        }
    }
    for w in weights.iter_mut() {
        *w *= cfg.routed_scaling_factor;
    }
    Ok(())
}

/// Phi-3.5-MoE's two-round sparse mixer on one row of (finite) logits: see
/// [`ScoringFunc::SparseMixer`]. The ratio is computed as a division, as transformers does, so that
/// an expert at the mask's edge falls on the same side.
fn sparse_mixer_row(logits: &[f32], eps: f32, ids: &mut [i32], weights: &mut [f32]) {
    // The best expert, ties to the lower index, among those not `skip`.
    let best = |skip: Option<usize>| {
        (0..logits.len())
            .filter(|&j| Some(j) != skip)
            .min_by(|&a, &b| rank_order(logits, a, b))
            .expect("sparse mixer routing has at least two experts")
    };
    let threshold = 2.0 * eps;
    // 1 / the sum of exp(s_j - m) over the experts not masked around m, `skip` left out.
    let weight = |m: f32, skip: Option<usize>| {
        let sum: f32 = logits
            .iter()
            .enumerate()
            .filter(|&(j, &l)| {
                let masked = (m - l) / l.abs().max(m) > threshold;
                Some(j) != skip && !masked
            })
            .map(|(_, &l)| (l - m).exp())
            .sum();
        1.0 / sum
    };
    let first = best(None);
    let second = best(Some(first));
    ids[0] = first as i32;
    ids[1] = second as i32;
    weights[0] = weight(logits[first], None);
    weights[1] = weight(logits[second], Some(first));
}

/// The score of one group of experts from its members' choice scores.
fn group_score(kind: GroupScore, members: &[f32]) -> f32 {
    match kind {
        GroupScore::Max => members.iter().copied().fold(f32::NEG_INFINITY, f32::max),
        GroupScore::SumTop2 => {
            let mut best = f32::NEG_INFINITY;
            let mut second = f32::NEG_INFINITY;
            for &v in members {
                if v > best {
                    second = best;
                    best = v;
                } else if v > second {
                    second = v;
                }
            }
            if members.len() == 1 {
                best
            } else {
                best + second
            }
        }
    }
}
