//! Shared test support: seeded random data (the seed is printed, and `MOE_TEST_SEED` replays it) and an
//! independent float64 oracle of every MoE stage, written from the definitions, not from the crate's code.
#![allow(dead_code)]

pub mod backend;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::time::{SystemTime, UNIX_EPOCH};

/// A seeded generator for one test. The seed comes from `MOE_TEST_SEED` when set (to replay a failure),
/// otherwise from the clock, and is printed either way.
pub fn rng(test: &str) -> StdRng {
    let base = match std::env::var("MOE_TEST_SEED") {
        Ok(s) => s.parse::<u64>().expect("MOE_TEST_SEED must be a u64"),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0x5eed),
    };
    eprintln!("[{test}] seed = {base} (replay with MOE_TEST_SEED={base})");
    StdRng::seed_from_u64(base)
}

/// `n` values uniform in `[lo, hi)`.
pub fn uniform(rng: &mut StdRng, n: usize, lo: f32, hi: f32) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(lo..hi)).collect()
}

/// `n` values of element type `T` with standard deviation about `scale` (uniform, zero mean).
pub fn values<T: moe_kernels::Element>(rng: &mut StdRng, n: usize, scale: f32) -> Vec<T> {
    randn(rng, n, scale).into_iter().map(T::from_f32).collect()
}

/// Random weights for `cfg`, scaled so that every stage sees values of order one. `hot` makes
/// expert 0 win every token (with hidden states of positive mean).
pub fn random_layer_weights<T: moe_kernels::Element>(
    rng: &mut StdRng,
    cfg: &moe_kernels::MoeConfig,
    hot: bool,
) -> moe_kernels::cpu::layer::MoeWeights<T> {
    use moe_kernels::cpu::layer::{MoeWeights, SharedExpertWeights};
    let (h, i, e) = (
        cfg.hidden_size,
        cfg.intermediate_size,
        cfg.routing.num_experts,
    );
    let up = cfg.activation.up_rows(i);
    let hs = 1.0 / (h as f32).sqrt();
    let mut router: Vec<T> = values(rng, e * h, hs);
    if hot {
        router[..h].fill(T::from_f32(4.0 * hs));
    }
    MoeWeights {
        router,
        biases: None,
        correction_bias: cfg
            .routing
            .correction_bias
            .then(|| uniform(rng, e, -0.1, 0.1)),
        gate_up: values(rng, e * up * h, 2.0 * hs),
        down: values(rng, e * h * i, 1.0 / (i as f32).sqrt()),
        shared: cfg
            .shared_experts
            .iter()
            .map(|s| SharedExpertWeights {
                gate_up: values(
                    rng,
                    cfg.activation.up_rows(s.intermediate_size) * h,
                    2.0 * hs,
                ),
                down: values(
                    rng,
                    h * s.intermediate_size,
                    1.0 / (s.intermediate_size as f32).sqrt(),
                ),
                gate: s.sigmoid_gate.then(|| values(rng, h, hs)),
            })
            .collect(),
    }
}

/// `n` values with standard deviation about `scale` (uniform, zero mean).
pub fn randn(rng: &mut StdRng, n: usize, scale: f32) -> Vec<f32> {
    let a = scale * 3f32.sqrt();
    uniform(rng, n, -a, a)
}

/// Random `[T, k]` expert ids with `k` distinct experts per token; `hot` sends every token to expert 0
/// first (one hot expert), `skew` draws from the first eighth of the experts only (many empty experts).
pub fn random_ids(
    rng: &mut StdRng,
    t: usize,
    e: usize,
    k: usize,
    hot: bool,
    skew: bool,
) -> Vec<i32> {
    let pool_size = if skew { k.max(e / 8).min(e) } else { e };
    let mut ids = Vec::with_capacity(t * k);
    for _ in 0..t {
        let mut pool: Vec<i32> = (0..pool_size as i32).collect();
        for j in 0..k {
            let pick = if hot && j == 0 {
                0
            } else {
                rng.random_range(j..pool_size)
            };
            pool.swap(j, pick);
            ids.push(pool[j]);
        }
    }
    ids
}

/// A random routing config over `e` experts: k from {1, 2, 6, 8, E, any}, grouped top-k (either group
/// score, enough kept groups for k) 40% of the time, softmax or sigmoid, bias, renormalisation and
/// scaling each at random; or, 15% of the time when `e >= 2`, the sparse mixer (k = 2).
pub fn random_routing_config(rng: &mut StdRng, e: usize) -> moe_kernels::RoutingConfig {
    use moe_kernels::{GroupScore, GroupedTopK, RoutingConfig, ScoringFunc};
    let mut ks: Vec<usize> = [1, 2, 6, 8, e].into_iter().filter(|&k| k <= e).collect();
    ks.push(rng.random_range(1..=e));
    let mut k = ks[rng.random_range(0..ks.len())];
    let divisors: Vec<usize> = (1..=e)
        .filter(|d| e.is_multiple_of(*d) && *d <= 64)
        .collect();
    let grouping = (e > 1 && rng.random_bool(0.4)).then(|| {
        let n_group = divisors[rng.random_range(0..divisors.len())];
        let min_groups = k.div_ceil(e / n_group);
        GroupedTopK {
            n_group,
            topk_group: rng.random_range(min_groups..=n_group),
            score: if rng.random_bool(0.5) {
                GroupScore::Max
            } else {
                GroupScore::SumTop2
            },
        }
    });
    if let Some(g) = &grouping {
        k = k.min(g.topk_group * (e / g.n_group));
    }
    if e >= 2 && rng.random_bool(0.15) {
        // Phi-3.5-MoE's sparse mixer: two experts, no bias, no groups.
        return RoutingConfig {
            top_k: 2,
            scoring: ScoringFunc::SparseMixer {
                jitter_eps: rng.random_range(0.0..0.5),
            },
            renormalize: rng.random_bool(0.3),
            routed_scaling_factor: [1.0f32, 2.5][rng.random_range(0..2)],
            ..RoutingConfig::softmax_topk(e, 2, false)
        };
    }
    RoutingConfig {
        num_experts: e,
        top_k: k,
        scoring: if rng.random_bool(0.5) {
            ScoringFunc::Softmax
        } else {
            ScoringFunc::Sigmoid
        },
        correction_bias: rng.random_bool(0.4),
        grouping,
        renormalize: rng.random_bool(0.5),
        routed_scaling_factor: [1.0f32, 2.5, 0.3][rng.random_range(0..3)],
        scale_input: false,
    }
}

/// The f64 choice scores (scores plus correction bias) of one row of router logits under `cfg`, from
/// the oracle: what near-tie judgements compare.
pub fn choice_scores(
    cfg: &moe_kernels::RoutingConfig,
    logits: &[f32],
    bias: Option<&[f32]>,
) -> Vec<f64> {
    let route = oracle::Route {
        e: cfg.num_experts,
        k: cfg.top_k,
        sigmoid: cfg.scoring == moe_kernels::ScoringFunc::Sigmoid,
        bias: bias.map(f64s),
        groups: None,
        renorm: false,
        scale: 1.0,
        sparse_mixer: None,
    };
    let scores = oracle::scores(&route, &f64s(logits));
    scores
        .iter()
        .enumerate()
        .map(|(e, s)| s + route.bias.as_ref().map_or(0.0, |b| b[e]))
        .collect()
}

/// Relative L2 error `|got - want| / |want|` (absolute when `want` is zero).
pub fn rel_l2(got: &[f64], want: &[f64]) -> f64 {
    rel_l2_of(got, want, 0.0)
}

/// [`rel_l2`] against the larger of `want`'s squared norm and `den_min` (the squared size of the
/// terms `want` sums, where they may cancel).
pub fn rel_l2_of(got: &[f64], want: &[f64], den_min: f64) -> f64 {
    assert_eq!(got.len(), want.len(), "rel_l2 of different lengths");
    let num: f64 = got.iter().zip(want).map(|(g, w)| (g - w) * (g - w)).sum();
    let den: f64 = want.iter().map(|w| w * w).sum::<f64>().max(den_min);
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Widen to f64.
pub fn f64s<T: Copy + Into<f64>>(v: &[T]) -> Vec<f64> {
    v.iter().map(|&x| x.into()).collect()
}

/// Widen any crate element to f64.
pub fn el64<T: moe_kernels::Element>(v: &[T]) -> Vec<f64> {
    v.iter().map(|x| x.to_f32() as f64).collect()
}

/// Assert every element is finite and the relative L2 error is within `tol`.
pub fn assert_close(what: &str, got: &[f64], want: &[f64], tol: f64) {
    assert_close_of(what, got, want, 0.0, tol)
}

/// [`assert_close`] with the error relative to [`rel_l2_of`]'s size: `want`'s, or `den_min`
/// (squared) where that is larger.
pub fn assert_close_of(what: &str, got: &[f64], want: &[f64], den_min: f64, tol: f64) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, g) in got.iter().enumerate() {
        assert!(g.is_finite(), "{what}: element {i} is {g}");
    }
    let e = rel_l2_of(got, want, den_min);
    assert!(e <= tol, "{what}: relative L2 error {e:e} > {tol:e}");
}

pub mod oracle {
    //! Float64 definitions of each stage.

    /// FP8 e4m3 from its definition: sign, exponent bias 7, subnormals at exponent 0,
    /// `S.1111.111` NaN.
    pub fn e4m3(code: u8) -> f64 {
        let sign = if code & 0x80 != 0 { -1.0 } else { 1.0 };
        let (e, m) = (((code >> 3) & 0xf) as i32, (code & 7) as f64);
        if e == 15 && m == 7.0 {
            return f64::NAN;
        }
        sign * if e == 0 {
            m / 8.0 * 2f64.powi(-6)
        } else {
            (1.0 + m / 8.0) * 2f64.powi(e - 7)
        }
    }

    /// FP4 e2m1 from its bit fields: sign bit 3, exponent bits 2..1 (bias 1), mantissa bit 0.
    pub fn e2m1(code: u8) -> f64 {
        let sign = if code & 8 != 0 { -1.0 } else { 1.0 };
        let (e, m) = ((code >> 1) & 3, (code & 1) as f64);
        let mag = if e == 0 {
            m * 0.5
        } else {
            (1.0 + m / 2.0) * 2f64.powi(e as i32 - 1)
        };
        sign * mag
    }

    /// An e8m0 scale byte: `2^(byte - 127)` (255, NaN in the OCP MX spec, is never a valid scale).
    pub fn e8m0(byte: u8) -> f64 {
        2f64.powi(byte as i32 - 127)
    }

    /// Routing settings, mirrored here so the oracle does not read the crate's logic.
    #[derive(Clone, Debug)]
    pub struct Route {
        pub e: usize,
        pub k: usize,
        pub sigmoid: bool,
        pub bias: Option<Vec<f64>>,
        /// (n_group, topk_group, sum_top2)
        pub groups: Option<(usize, usize, bool)>,
        pub renorm: bool,
        pub scale: f64,
        /// Phi-3.5-MoE's sparse mixer with this `jitter_eps` (logits are the choice scores).
        pub sparse_mixer: Option<f64>,
    }

    impl Route {
        /// The settings of `cfg`, with the correction bias `bias` (given exactly when it uses one).
        pub fn of(cfg: &moe_kernels::RoutingConfig, bias: Option<&[f32]>) -> Route {
            use moe_kernels::{GroupScore, ScoringFunc};
            Route {
                e: cfg.num_experts,
                k: cfg.top_k,
                sigmoid: cfg.scoring == ScoringFunc::Sigmoid,
                bias: bias.map(super::f64s),
                groups: cfg
                    .grouping
                    .map(|g| (g.n_group, g.topk_group, g.score == GroupScore::SumTop2)),
                renorm: cfg.renormalize,
                scale: cfg.routed_scaling_factor as f64,
                sparse_mixer: match cfg.scoring {
                    ScoringFunc::SparseMixer { jitter_eps } => Some(jitter_eps as f64),
                    _ => None,
                },
            }
        }
    }

    /// One token's routing: chosen ids (descending choice, ties to the lower index), weights, and every
    /// expert's score and choice score (for near-tie decisions and for re-weighting another selection).
    #[derive(Clone, Debug)]
    pub struct RowRoute {
        pub ids: Vec<usize>,
        pub weights: Vec<f64>,
        pub scores: Vec<f64>,
        pub choice: Vec<f64>,
        /// Some decision of this row (a sparse mixer mask, the last group kept) sits so close to
        /// its threshold that `f32` rounding may take the other side.
        pub fragile: bool,
    }

    impl RowRoute {
        /// Whether `got` are these ids up to the decisions `f32` rounding may take the other way:
        /// a slot whose two experts' choice scores are within 1e-5 relative, or any slot of a
        /// fragile row.
        pub fn ids_agree(&self, got: &[usize]) -> bool {
            self.fragile
                || got.iter().zip(&self.ids).all(|(&g, &w)| {
                    let (cg, cw) = (self.choice[g], self.choice[w]);
                    g == w || (cg - cw).abs() <= 1e-5 * cw.abs().max(1e-3)
                })
        }
    }

    pub fn scores(r: &Route, logits: &[f64]) -> Vec<f64> {
        if r.sparse_mixer.is_some() {
            logits.to_vec()
        } else if r.sigmoid {
            logits.iter().map(|&l| 1.0 / (1.0 + (-l).exp())).collect()
        } else {
            let m = logits.iter().cloned().fold(f64::MIN, f64::max);
            let ex: Vec<f64> = logits.iter().map(|&l| (l - m).exp()).collect();
            let s: f64 = ex.iter().sum();
            ex.iter().map(|v| v / s).collect()
        }
    }

    /// The weights the routing rule gives to the selection `ids` (for the sparse mixer, whose
    /// scores are the logits, the weights of that pair of picks).
    pub fn weights_for(r: &Route, scores: &[f64], ids: &[usize]) -> Vec<f64> {
        let mut w: Vec<f64> = match r.sparse_mixer {
            Some(eps) => sparse_mixer_weights(scores, eps, ids).0,
            None => ids.iter().map(|&i| scores[i]).collect(),
        };
        if r.renorm {
            let s: f64 = w.iter().sum();
            if s > 0.0 {
                w.iter_mut().for_each(|v| *v /= s);
            }
        }
        w.iter().map(|v| v * r.scale).collect()
    }

    /// Indices sorted by descending value, ties to the lower index.
    fn ranked(vals: &[f64], cand: &[usize]) -> Vec<usize> {
        let mut c = cand.to_vec();
        c.sort_by(|&a, &b| vals[b].partial_cmp(&vals[a]).unwrap().then(a.cmp(&b)));
        c
    }

    pub fn route_row(r: &Route, logits: &[f64]) -> RowRoute {
        let scores = scores(r, logits);
        let choice: Vec<f64> = (0..r.e)
            .map(|i| scores[i] + r.bias.as_ref().map_or(0.0, |b| b[i]))
            .collect();
        // The groups kept, and whether the last kept and the first dropped nearly tie.
        let (eligible, group_tie): (Vec<usize>, bool) = match r.groups {
            None => ((0..r.e).collect(), false),
            Some((ng, kg, sum2)) => {
                let gs = r.e / ng;
                let gscore: Vec<f64> = (0..ng)
                    .map(|g| {
                        let mut m: Vec<f64> = choice[g * gs..(g + 1) * gs].to_vec();
                        m.sort_by(|a, b| b.partial_cmp(a).unwrap());
                        if sum2 && gs >= 2 {
                            m[0] + m[1]
                        } else {
                            m[0]
                        }
                    })
                    .collect();
                let all: Vec<usize> = (0..ng).collect();
                let order = ranked(&gscore, &all);
                let keep = &order[..kg];
                let tie = kg < ng && {
                    let (last, next) = (gscore[order[kg - 1]], gscore[order[kg]]);
                    (last - next).abs() <= 1e-5 * last.abs().max(1e-3)
                };
                ((0..r.e).filter(|i| keep.contains(&(i / gs))).collect(), tie)
            }
        };
        let ids: Vec<usize> = ranked(&choice, &eligible)[..r.k].to_vec();
        let weights = weights_for(r, &scores, &ids);
        let fragile = group_tie
            || r.sparse_mixer
                .is_some_and(|eps| sparse_mixer_weights(logits, eps, &ids).1);
        RowRoute {
            ids,
            weights,
            scores,
            choice,
            fragile,
        }
    }

    /// Phi-3.5-MoE's sparsemixer (eval mode), written from transformers' code: for pick `j` with
    /// logit `m`, the experts `x` with `(m - s_x) / max(|s_x|, m) > 2 eps` are masked (pick 0 too,
    /// for pick 1), and the weight is pick `j`'s softmax over the rest. Also whether a ratio lies
    /// within 1e-5 of the threshold.
    fn sparse_mixer_weights(s: &[f64], eps: f64, ids: &[usize]) -> (Vec<f64>, bool) {
        let mut fragile = false;
        let mut out = vec![];
        for (j, &pick) in ids.iter().enumerate() {
            let m = s[pick];
            let mut den = 0.0;
            for (x, &sx) in s.iter().enumerate() {
                if j == 1 && x == ids[0] {
                    continue;
                }
                let ratio = (m - sx) / sx.abs().max(m);
                fragile |= (ratio - 2.0 * eps).abs() < 1e-5;
                let masked = ratio > 2.0 * eps;
                if !masked {
                    den += (sx - m).exp();
                }
            }
            out.push(1.0 / den);
        }
        (out, fragile)
    }

    pub fn silu(x: f64) -> f64 {
        x / (1.0 + (-x).exp())
    }

    pub fn gelu_tanh(x: f64) -> f64 {
        0.5 * x * (1.0 + ((2.0 / std::f64::consts::PI).sqrt() * (x + 0.044715 * x * x * x)).tanh())
    }

    /// `y = w x` for `w` `[n, k]` row-major.
    pub fn matvec(w: &[f64], n: usize, k: usize, x: &[f64]) -> Vec<f64> {
        (0..n)
            .map(|j| (0..k).map(|c| w[j * k + c] * x[c]).sum())
            .collect()
    }

    /// The gated activation `act(gate) * up` in f64, written from each kind's definition
    /// (gpt-oss's clamped SwiGLU: `(clamp(up, ±limit) + 1) * g * sigmoid(alpha g)`,
    /// `g = min(gate, limit)`).
    pub fn gated(kind: moe_kernels::ActivationKind, g: f64, u: f64) -> f64 {
        use moe_kernels::ActivationKind as K;
        match kind {
            K::Silu => silu(g) * u,
            K::GeluTanh => gelu_tanh(g) * u,
            K::ClampedSilu { alpha, limit } => {
                let (alpha, limit) = (alpha as f64, limit as f64);
                let g = g.min(limit);
                let u = u.clamp(-limit, limit);
                (u + 1.0) * g / (1.0 + (-alpha * g).exp())
            }
        }
    }

    /// One expert MLP on one token: `down(act(gate) * up)` (gated) or `down(act(up))`, with the
    /// expert's biases `(gate_up [up rows], down [h])` added to the projections when given.
    pub fn mlp(
        x: &[f64],
        gate_up: &[f64],
        down: &[f64],
        h: usize,
        i: usize,
        act: moe_kernels::Activation,
        bias: Option<(&[f32], &[f32])>,
    ) -> Vec<f64> {
        let mut up = matvec(gate_up, act.up_rows(i), h, x);
        if let Some((b, _)) = bias {
            up.iter_mut().zip(b).for_each(|(u, &b)| *u += b as f64);
        }
        let mid: Vec<f64> = (0..i)
            .map(|j| {
                if act.gated {
                    gated(act.kind, up[j], up[i + j])
                } else if act.kind == moe_kernels::ActivationKind::GeluTanh {
                    gelu_tanh(up[j])
                } else {
                    silu(up[j])
                }
            })
            .collect();
        let mut y = matvec(down, h, i, &mid);
        if let Some((_, b)) = bias {
            y.iter_mut().zip(b).for_each(|(v, &b)| *v += b as f64);
        }
        y
    }

    /// One token's layer output: `sum_s w_s * expert_{ids[s]}(x) + sum of the shared experts`
    /// (each times its sigmoid gate), from the whole layer's weights; `shared` adds the shared
    /// experts or not.
    pub fn layer_token<W: moe_kernels::Element>(
        cfg: &moe_kernels::MoeConfig,
        weights: &moe_kernels::cpu::layer::MoeWeights<W>,
        x: &[f64],
        ids: &[usize],
        wts: &[f64],
        shared: bool,
    ) -> Vec<f64> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let up = cfg.activation.up_rows(i);
        let act = cfg.activation;
        let el = |v: &[W]| v.iter().map(|e| e.to_f32() as f64).collect::<Vec<f64>>();
        let mut acc = vec![0f64; h];
        for (&ex, &w) in ids.iter().zip(wts) {
            let gu = el(&weights.gate_up[ex * up * h..(ex + 1) * up * h]);
            let dn = el(&weights.down[ex * h * i..(ex + 1) * h * i]);
            // Llama 4: the expert runs on w x, and its output adds with weight 1.
            let (xin, w) = if cfg.routing.scale_input {
                (x.iter().map(|v| v * w).collect(), 1.0)
            } else {
                (x.to_vec(), w)
            };
            let bias = weights.biases.as_ref().map(|b| {
                (
                    &b.gate_up[ex * up..(ex + 1) * up],
                    &b.down[ex * h..(ex + 1) * h],
                )
            });
            let y = mlp(&xin, &gu, &dn, h, i, act, bias);
            acc.iter_mut().zip(&y).for_each(|(a, v)| *a += w * v);
        }
        if !shared {
            return acc;
        }
        for (sc, sw) in cfg.shared_experts.iter().zip(&weights.shared) {
            let y = mlp(
                x,
                &el(&sw.gate_up),
                &el(&sw.down),
                h,
                sc.intermediate_size,
                act,
                None,
            );
            let g = sw.gate.as_ref().map_or(1.0, |g| {
                let l: f64 = el(g).iter().zip(x).map(|(a, b)| a * b).sum();
                1.0 / (1.0 + (-l).exp())
            });
            acc.iter_mut().zip(&y).for_each(|(a, v)| *a += g * v);
        }
        acc
    }
}

/// The GPU for GPU test `module::test`: the real GPU when there is one, else the emulated GPU
/// (see [`backend`]); `None` when neither can run it: then `SKIPPED <module>::<test>: <reason>`
/// goes straight to the stderr handle (so that the harness does not capture it and a skip is
/// visible in a plain `cargo test`), unless `MOE_KERNELS_REQUIRE_GPU=1`, which turns a missing GPU
/// into a failure (GPU runners).
pub fn gpu(module: &str, test: &str) -> Option<moe_kernels::gpu::Device> {
    use moe_kernels::MoeError;
    use std::io::Write;
    let reason = match backend::backend() {
        backend::Backend::Unavailable(why) => Some(why.clone()),
        _ => None,
    };
    match moe_kernels::gpu::Device::new(0) {
        Ok(dev) => Some(dev),
        Err(e @ (MoeError::KernelsNotBuilt | MoeError::NoCudaDevice(_))) => {
            let why = match (&e, reason) {
                (MoeError::NoCudaDevice(_), Some(r)) => format!("{e}; no emulator either: {r}"),
                _ => e.to_string(),
            };
            if std::env::var("MOE_KERNELS_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                panic!("MOE_KERNELS_REQUIRE_GPU=1 but no GPU is usable: {why}");
            }
            let _ = writeln!(std::io::stderr(), "SKIPPED {module}::{test}: {why}");
            None
        }
        Err(e) => panic!("Device::new(0) failed unexpectedly: {e}"),
    }
}

/// The device pointers of an uploaded layer's weights, as the raw layer takes them, read on
/// `stream` (the tests keep every buffer on one stream at a time and synchronise between, so the
/// guards are not kept).
pub fn raw_weights(
    layer: &moe_kernels::gpu::GpuMoeLayer<half::bf16>,
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
) -> moe_kernels::raw::RawLayerWeights {
    use cudarc::driver::{CudaView, DevicePtr};
    use moe_kernels::raw::{
        RawBiases, RawExpertMap, RawLayerWeights, RawMatrices, RawSharedExpert,
    };
    let w = layer.weights();
    let ptr = |v: &CudaView<'_, half::bf16>| v.device_ptr(stream).0;
    let plain = |v: &CudaView<'_, half::bf16>| RawMatrices::Plain(ptr(v));
    RawLayerWeights {
        router: ptr(&w.router()),
        correction_bias: w.correction_bias().map(|b| b.device_ptr(stream).0),
        gate_up: plain(&w.gate_up()),
        down: plain(&w.down()),
        shared: w
            .shared()
            .iter()
            .map(|s| RawSharedExpert {
                gate_up: plain(&s.gate_up()),
                down: plain(&s.down()),
                gate: s.gate().map(|g| ptr(&g)),
            })
            .collect(),
        expert_map: w.expert_map().map(|m| RawExpertMap {
            table: m.device().device_ptr(stream).0,
            num_local: m.map().num_local(),
            shared_experts: m.map().shared_experts(),
        }),
        biases: w.biases().map(|b| RawBiases {
            router: b.router().device_ptr(stream).0,
            gate_up: b.gate_up().device_ptr(stream).0,
            down: b.down().device_ptr(stream).0,
        }),
    }
}

/// One raw forward (`raw::layer_forward`) of `t` bf16 tokens `x` into `out` on `stream`, in the
/// workspace `ws` (all of it), with the status record reset before and read after; reading it
/// synchronises `stream`. Panics on any error.
#[allow(clippy::too_many_arguments)]
pub fn raw_forward_checked(
    dev: &moe_kernels::gpu::Device,
    stream: &std::sync::Arc<cudarc::driver::CudaStream>,
    cfg: &moe_kernels::MoeConfig,
    weights: &moe_kernels::raw::RawLayerWeights,
    x: &cudarc::driver::CudaSlice<half::bf16>,
    t: usize,
    out: &mut cudarc::driver::CudaSlice<half::bf16>,
    ws: &mut cudarc::driver::CudaSlice<u8>,
) {
    use cudarc::driver::{DevicePtr, DevicePtrMut};
    use moe_kernels::raw;
    let bytes = ws.len();
    let (x_ptr, _) = x.device_ptr(stream);
    let (out_ptr, _) = out.device_ptr_mut(stream);
    let (ws_ptr, _) = ws.device_ptr_mut(stream);
    let s = stream.cu_stream().cast();
    // SAFETY: x and out are live device buffers of the device's context holding t * H bf16 (the
    // callers size them so), the weights are an uploaded layer's buffers for `cfg`, the workspace
    // holds `bytes` bytes; all are used on `stream` only, and read_status synchronises it before
    // the guards drop.
    unsafe {
        raw::reset_status(dev, s, ws_ptr).unwrap();
        raw::layer_forward(
            dev,
            s,
            cfg,
            moe_kernels::DType::BF16,
            weights,
            x_ptr,
            t,
            out_ptr,
            ws_ptr,
            bytes,
        )
        .unwrap();
        raw::read_status(dev, s, ws_ptr).unwrap();
    }
}

/// Whether the GPU tests run on the emulated GPU (cases too large for it use a scaled-down twin).
pub fn emulated() -> bool {
    backend::emulated()
}

/// A family preset scaled down to a width and intermediate size a CPU reference runs quickly,
/// keeping its routing (E, k, grouping, scoring) and shared-expert structure.
pub fn scaled(mut cfg: moe_kernels::MoeConfig, h: usize, i: usize) -> moe_kernels::MoeConfig {
    let ratio = i as f64 / cfg.intermediate_size as f64;
    cfg.hidden_size = h;
    cfg.intermediate_size = i;
    for s in &mut cfg.shared_experts {
        s.intermediate_size = ((s.intermediate_size as f64 * ratio).round() as usize).max(8);
    }
    cfg
}
