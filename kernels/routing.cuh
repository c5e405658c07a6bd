// routing.cuh: the router's per-row algorithm, shared by the kernels (kernels/routing.cu, one warp
// per row with MoeWarpLanes) and their host twin (kernels/host/routing.cpp, MoeSerialLanes), which
// tests/host_math.rs checks against cpu::routing::route.
//
// Semantics (identical to the CPU reference, see RoutingConfig in src/config.rs): scores are the
// softmax over E (max-subtracted) or the sigmoid of the logits; choice scores add the optional
// correction bias; with grouped selection only the experts of the `topk_group` best groups are
// eligible; the k eligible experts with the largest choice scores are picked in descending order,
// equal scores going to the lower expert index; weights are the picked experts' unbiased scores,
// optionally divided by their sum, times the routed scaling factor.
//
// The sparse mixer (MOE_SCORING_SPARSE_MIXER, Phi-3.5-MoE) scores are the logits themselves, so the
// same two selection passes pick i1 and i2; each pick's weight is then replaced by 1 / the sum of
// exp(s - m) over the experts not masked around its logit m (i1 left out of i2's sum), one more
// pass over the row and a butterfly sum per pick (moe_sparse_mixer_weight).
//
// Decomposition of one row over the lanes: lane l owns the experts e = l + i * kWidth (slot i). A row
// source holds or recomputes the owned experts' scores:
//   - MoeRegisterRow<T, kPerLane>: every owned score and choice score in registers (the fast path,
//     E <= 32 * kPerLane on a warp), computed once;
//   - MoeRecomputedRow<T>: nothing stored, each score recomputed from its logit when needed (any E;
//     the row's logits stay in L1 across passes).
// Both compute every score with the same expressions in the same order, so they give bit-identical
// results. Reductions over the row are butterflies after which every lane holds the same value, so
// all lanes follow the same control flow.
//
// Top-k without a mask: pass j looks for the best eligible expert ranked strictly after pick j - 1 in
// the total order (choice descending, index ascending). The order is strict and total, so the k passes
// yield the k best experts, best first, with no per-expert "taken" state.
//
// Grouped selection: for each group the lanes reduce the top two choice scores of their owned
// members; the group's score goes to the caller's `group_scores` buffer (n_group floats, shared
// memory on the device). topk_group passes over those scores find the last kept group (the
// threshold); an expert is eligible when its group ranks at or before the threshold.
#ifndef MOE_ROUTING_CUH
#define MOE_ROUTING_CUH

#include <math.h>
#include <stdint.h>

#include "moe_abi.h"
#include "moe_lanes.cuh"
#include "moe_status.cuh"

// The total order of (score, index) pairs used for every selection: higher score first, equal scores
// in favour of the lower index. Scores reaching this are never NaN (rows with a non-finite input are
// diverted before selection), so this is a strict total order over distinct indices.
MOE_HD bool moe_ranks_before(float score_a, int32_t index_a, float score_b, int32_t index_b) {
    return score_a > score_b || (score_a == score_b && index_a < index_b);
}

// A (score, index) pair in the selection order. `moe_rank_none()` ranks after every real candidate
// (lowest score, largest index) and `moe_rank_top()` before every one; they are the identities of the
// "best so far" search and the "previous pick" bound.
struct MoeRanked {
    float score;
    int32_t index;
};

MOE_HD MoeRanked moe_rank_none() {
    MoeRanked r;
    r.score = -__builtin_huge_valf();
    r.index = INT32_MAX;
    return r;
}

MOE_HD MoeRanked moe_rank_top() {
    MoeRanked r;
    r.score = __builtin_huge_valf();
    r.index = -1;
    return r;
}

// Whether `a` ranks strictly before `b`.
MOE_HD bool moe_ranked_before(MoeRanked a, MoeRanked b) {
    return moe_ranks_before(a.score, a.index, b.score, b.index);
}

// The best of the lanes' ranked pairs, returned to every lane. The order is strict on distinct
// indices, so all lanes agree on the winner.
template <class Lanes>
MOE_HD MoeRanked moe_best_ranked(const Lanes& lanes, MoeRanked r) {
    for (int offset = Lanes::kWidth / 2; offset > 0; offset /= 2) {
        MoeRanked other;
        other.score = lanes.shfl_xor(r.score, offset);
        other.index = lanes.shfl_xor(r.index, offset);
        if (moe_ranked_before(other, r)) {
            r = other;
        }
    }
    return r;
}

// A top-k candidate: its rank (choice score, expert) and its unbiased score, the weight before
// renormalisation.
struct MoeCandidate {
    MoeRanked rank;
    float score;
};

MOE_HD MoeCandidate moe_candidate_none() {
    MoeCandidate c;
    c.rank = moe_rank_none();
    c.score = 0.0f;
    return c;
}

// The best of the lanes' candidates, returned to every lane.
template <class Lanes>
MOE_HD MoeCandidate moe_best_candidate(const Lanes& lanes, MoeCandidate c) {
    for (int offset = Lanes::kWidth / 2; offset > 0; offset /= 2) {
        MoeCandidate other;
        other.rank.score = lanes.shfl_xor(c.rank.score, offset);
        other.rank.index = lanes.shfl_xor(c.rank.index, offset);
        other.score = lanes.shfl_xor(c.score, offset);
        if (moe_ranked_before(other.rank, c.rank)) {
            c = other;
        }
    }
    return c;
}

// Group of an expert: experts are split into equal contiguous groups of `group_size`.
MOE_HD int32_t moe_group_of_expert(int32_t expert, int32_t group_size) {
    return expert / group_size;
}

// Running group score: the best and second-best choice score seen so far in one group.
struct MoeTop2 {
    float first;
    float second;
};

MOE_HD MoeTop2 moe_top2_empty() {
    MoeTop2 t;
    t.first = -__builtin_huge_valf();
    t.second = -__builtin_huge_valf();
    return t;
}

MOE_HD MoeTop2 moe_top2_push(MoeTop2 t, float value) {
    if (value > t.first) {
        t.second = t.first;
        t.first = value;
    } else if (value > t.second) {
        t.second = value;
    }
    return t;
}

// The two best of the union of two multisets summarised by `a` and `b`.
MOE_HD MoeTop2 moe_top2_merge(MoeTop2 a, MoeTop2 b) {
    MoeTop2 t;
    t.first = fmaxf(a.first, b.first);
    t.second = fmaxf(fminf(a.first, b.first), fmaxf(a.second, b.second));
    return t;
}

// The lanes' partial top-2s merged, returned to every lane (max/min are exact, so every lane holds the
// same pair).
template <class Lanes>
MOE_HD MoeTop2 moe_top2_reduce(const Lanes& lanes, MoeTop2 t) {
    for (int offset = Lanes::kWidth / 2; offset > 0; offset /= 2) {
        MoeTop2 other;
        other.first = lanes.shfl_xor(t.first, offset);
        other.second = lanes.shfl_xor(t.second, offset);
        t = moe_top2_merge(t, other);
    }
    return t;
}

// The score of a group of `group_size` experts whose choice scores were all pushed into `t`:
// MOE_GROUP_SCORE_MAX gives the best one, MOE_GROUP_SCORE_SUM_TOP2 the sum of the best two (a group of
// one expert scores that expert).
MOE_HD float moe_group_score(MoeTop2 t, int32_t group_size, int32_t kind) {
    if (kind == MOE_GROUP_SCORE_SUM_TOP2 && group_size >= 2) {
        return t.first + t.second;
    }
    return t.first;
}

// Whether group `g` with score `score` is one of the kept groups, given `threshold`, the last kept group
// in the selection order: kept groups are exactly those ranked at or before it.
MOE_HD bool moe_group_kept(float score, int32_t g, MoeRanked threshold) {
    return !moe_ranks_before(threshold.score, threshold.index, score, g);
}

MOE_HD bool moe_isfinite(float x) {
#ifdef __CUDA_ARCH__
    return isfinite(x);
#else
    return __builtin_isfinite(x);
#endif
}

// The logistic function, as the CPU reference writes it. expf (not __expf) and IEEE division keep
// every score within an ulp or two of the reference.
MOE_HD float moe_sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }

// Record a non-finite value in a status slot (the lowest (token, expert) wins).
MOE_HD void moe_report_nonfinite(uint64_t* slot, int64_t token, int32_t expert, float value) {
    moe_status_max(slot, moe_status_key(static_cast<uint32_t>(token), static_cast<uint32_t>(expert),
                                        moe_nonfinite_kind(value)));
}

// Checks logit `x` of expert `e` (and the expert's bias entry) of row `token`; reports and returns
// true when one is not finite.
MOE_HD bool moe_check_inputs(const MoeRoutingParams& p, int64_t token, int32_t e, float x) {
    bool bad = false;
    if (!moe_isfinite(x)) {
        bad = true;
        moe_report_nonfinite(&p.status->nonfinite_logit, token, e, x);
    }
    if (p.correction_bias != nullptr && !moe_isfinite(p.correction_bias[e])) {
        bad = true;
        moe_report_nonfinite(&p.status->nonfinite_bias, 0, e, p.correction_bias[e]);
    }
    return bad;
}

// The fast row source: lane l keeps the scores and choice scores of its kPerLane experts
// l + i * kWidth in registers (experts past E hold "none").
template <typename T, int kPerLane>
struct MoeRegisterRow {
    float score[kPerLane];
    float choice[kPerLane];
    int32_t num_experts;

    MOE_HD int32_t slots() const { return kPerLane; }

    // Load and score the row; returns (to every lane) whether any input is non-finite, after
    // reporting it.
    template <class Lanes>
    MOE_HD bool load(const Lanes& lanes, const MoeRoutingParams& p, int64_t token) {
        const T* logits = static_cast<const T*>(p.logits) + token * p.num_experts;
        num_experts = p.num_experts;
        bool bad = false;
        float local_max = -__builtin_huge_valf();
        for (int i = 0; i < kPerLane; ++i) {
            const int32_t e = lanes.lane() + i * Lanes::kWidth;
            score[i] = -__builtin_huge_valf();
            if (e < num_experts) {
                const float x = moe_to_float(logits[e]);
                bad = moe_check_inputs(p, token, e, x) || bad;
                score[i] = x;
                local_max = fmaxf(local_max, x);
            }
        }
        if (lanes.any(bad)) {
            return true;
        }
        if (p.scoring == MOE_SCORING_SOFTMAX) {
            const float max_logit = lanes.max(local_max);
            float local_sum = 0.0f;
            for (int i = 0; i < kPerLane; ++i) {
                if (lanes.lane() + i * Lanes::kWidth < num_experts) {
                    score[i] = expf(score[i] - max_logit);
                    local_sum += score[i];
                }
            }
            const float denominator = lanes.sum(local_sum);
            for (int i = 0; i < kPerLane; ++i) {
                score[i] = score[i] / denominator;
            }
        } else if (p.scoring == MOE_SCORING_SIGMOID) {
            for (int i = 0; i < kPerLane; ++i) {
                score[i] = moe_sigmoid(score[i]);
            }
        }
        for (int i = 0; i < kPerLane; ++i) {
            const int32_t e = lanes.lane() + i * Lanes::kWidth;
            choice[i] = score[i];
            if (p.correction_bias != nullptr && e < num_experts) {
                choice[i] = score[i] + p.correction_bias[e];
            }
        }
        return false;
    }

    // Slot i's candidate, or none past E.
    template <class Lanes>
    MOE_HD MoeCandidate candidate(const Lanes& lanes, int32_t i) const {
        MoeCandidate c = moe_candidate_none();
        const int32_t e = lanes.lane() + i * Lanes::kWidth;
        if (e < num_experts) {
            c.rank.score = choice[i];
            c.rank.index = e;
            c.score = score[i];
        }
        return c;
    }

    // This lane's top two choice scores among its experts in [begin, end).
    template <class Lanes>
    MOE_HD MoeTop2 group_top2(const Lanes& lanes, int32_t begin, int32_t end) const {
        MoeTop2 t = moe_top2_empty();
        for (int i = 0; i < kPerLane; ++i) {
            const int32_t e = lanes.lane() + i * Lanes::kWidth;
            if (e >= begin && e < end) {
                t = moe_top2_push(t, choice[i]);
            }
        }
        return t;
    }
};

// The general row source: nothing per expert is stored; the softmax max and denominator are
// computed once and each score is recomputed from its logit.
template <typename T>
struct MoeRecomputedRow {
    const T* logits;
    const float* bias;
    int32_t num_experts;
    int32_t num_slots;
    bool softmax;
    bool sigmoid;
    float max_logit;
    float denominator;

    MOE_HD int32_t slots() const { return num_slots; }

    template <class Lanes>
    MOE_HD bool load(const Lanes& lanes, const MoeRoutingParams& p, int64_t token) {
        logits = static_cast<const T*>(p.logits) + token * p.num_experts;
        bias = p.correction_bias;
        num_experts = p.num_experts;
        num_slots = (num_experts + Lanes::kWidth - 1) / Lanes::kWidth;
        softmax = p.scoring == MOE_SCORING_SOFTMAX;
        sigmoid = p.scoring == MOE_SCORING_SIGMOID;
        max_logit = 0.0f;
        denominator = 1.0f;
        bool bad = false;
        float local_max = -__builtin_huge_valf();
        for (int32_t e = lanes.lane(); e < num_experts; e += Lanes::kWidth) {
            const float x = moe_to_float(logits[e]);
            bad = moe_check_inputs(p, token, e, x) || bad;
            local_max = fmaxf(local_max, x);
        }
        if (lanes.any(bad)) {
            return true;
        }
        if (softmax) {
            max_logit = lanes.max(local_max);
            float local_sum = 0.0f;
            for (int32_t e = lanes.lane(); e < num_experts; e += Lanes::kWidth) {
                local_sum += expf(moe_to_float(logits[e]) - max_logit);
            }
            denominator = lanes.sum(local_sum);
        }
        return false;
    }

    // The unbiased score s(e) (the logit itself for the sparse mixer).
    MOE_HD float score_of(int32_t e) const {
        const float x = moe_to_float(logits[e]);
        if (softmax) {
            return expf(x - max_logit) / denominator;
        }
        if (sigmoid) {
            return moe_sigmoid(x);
        }
        return x;
    }

    // The choice score c(e) = s(e) + bias(e).
    MOE_HD float choice_of(int32_t e, float s) const { return bias != nullptr ? s + bias[e] : s; }

    template <class Lanes>
    MOE_HD MoeCandidate candidate(const Lanes& lanes, int32_t i) const {
        MoeCandidate c = moe_candidate_none();
        const int32_t e = lanes.lane() + i * Lanes::kWidth;
        if (e < num_experts) {
            c.score = score_of(e);
            c.rank.score = choice_of(e, c.score);
            c.rank.index = e;
        }
        return c;
    }

    template <class Lanes>
    MOE_HD MoeTop2 group_top2(const Lanes& lanes, int32_t begin, int32_t end) const {
        MoeTop2 t = moe_top2_empty();
        // This lane's first expert at or after `begin`.
        const int32_t skip = (lanes.lane() - begin % Lanes::kWidth + Lanes::kWidth) % Lanes::kWidth;
        for (int32_t e = begin + skip; e < end; e += Lanes::kWidth) {
            t = moe_top2_push(t, choice_of(e, score_of(e)));
        }
        return t;
    }
};

// A row that cannot be routed (non-finite input): the defined fallback is experts 0..k-1 with weight
// 0, which keeps every later stage in bounds and contributes nothing. Lane l writes slots l, l + w...
template <class Lanes>
MOE_HD void moe_write_fallback_row(const Lanes& lanes, const MoeRoutingParams& p, int64_t token) {
    int32_t* ids = p.topk_ids + token * p.top_k;
    float* weights = p.topk_weights + token * p.top_k;
    for (int32_t j = lanes.lane(); j < p.top_k; j += Lanes::kWidth) {
        ids[j] = j;
        weights[j] = 0.0f;
    }
}

// Grouped selection: every group's score into `group_scores`, and the last kept group (returned to
// every lane). Lane g % kWidth stores group g's score; the sync makes them visible to all lanes.
template <class Lanes, class Row>
MOE_HD MoeRanked moe_select_groups(const Lanes& lanes, const MoeRoutingParams& p, const Row& row,
                                   float* group_scores) {
    const int32_t group_size = p.num_experts / p.n_group;
    for (int32_t g = 0; g < p.n_group; ++g) {
        const MoeTop2 top = moe_top2_reduce(
            lanes, row.group_top2(lanes, g * group_size, (g + 1) * group_size));
        if (lanes.lane() == g % Lanes::kWidth) {
            group_scores[g] = moe_group_score(top, group_size, p.group_score);
        }
    }
    // Each lane reads every group's score below, including those stored by other lanes.
    lanes.sync();
    // Pass q finds the (q+1)-th best group: the best one ranked strictly after the previous pass's.
    MoeRanked threshold = moe_rank_top();
    for (int32_t q = 0; q < p.topk_group; ++q) {
        MoeRanked best = moe_rank_none();
        for (int32_t g = lanes.lane(); g < p.n_group; g += Lanes::kWidth) {
            MoeRanked candidate;
            candidate.score = group_scores[g];
            candidate.index = g;
            if (moe_ranked_before(threshold, candidate) && moe_ranked_before(candidate, best)) {
                best = candidate;
            }
        }
        threshold = moe_best_ranked(lanes, best);
    }
    return threshold;
}

// The sparse mixer's weight of a pick with logit `m`: 1 / the sum of exp(s - m) over the experts
// whose ratio (m - s) / max(|s|, m) is not above `threshold` (a 0/0 ratio is NaN, not above it), expert
// `skip` left out; returned to every lane. The division form is transformers'.
template <class Lanes, class Row>
MOE_HD float moe_sparse_mixer_weight(const Lanes& lanes, const Row& row, float m, int32_t skip,
                                     float threshold) {
    float local = 0.0f;
    for (int32_t i = 0; i < row.slots(); ++i) {
        const MoeCandidate c = row.candidate(lanes, i);
        if (c.rank.index == INT32_MAX || c.rank.index == skip) {
            continue;
        }
        const float s = c.score;
        const float ratio = (m - s) / fmaxf(fabsf(s), m);
        if (!(ratio > threshold)) {
            local += expf(s - m);
        }
    }
    return 1.0f / lanes.sum(local);
}

// Route row `token`: the whole per-row algorithm, for any lanes and row source. `group_scores` holds
// n_group floats owned by these lanes (unused when n_group is 0).
template <class Lanes, class Row>
MOE_HD void moe_route_row(const Lanes& lanes, const MoeRoutingParams& p, Row& row, int64_t token,
                          float* group_scores) {
    if (row.load(lanes, p, token)) {
        moe_write_fallback_row(lanes, p, token);
        return;
    }
    const bool grouped = p.n_group > 0;
    const int32_t group_size = grouped ? p.num_experts / p.n_group : p.num_experts;
    MoeRanked threshold = moe_rank_none();
    if (grouped) {
        threshold = moe_select_groups(lanes, p, row, group_scores);
    }

    // Pick j is the best eligible expert ranked strictly after pick j - 1. Lane (j mod kWidth) owns
    // slot j. When k <= kWidth each lane owns at most one slot and keeps it in registers until the
    // rescaling, which then writes all k slots in one coalesced store of ids and one of weights;
    // otherwise the lanes store each pick as it is made and rescale what they stored (reading back
    // only their own writes).
    int32_t* ids = p.topk_ids + token * p.top_k;
    float* weights = p.topk_weights + token * p.top_k;
    const bool in_registers = p.top_k <= Lanes::kWidth;
    int32_t my_id = 0;
    float my_score = 0.0f;
    MoeRanked previous = moe_rank_top();
    MoeRanked first = moe_rank_none();
    float weight_sum = 0.0f;
    for (int32_t j = 0; j < p.top_k; ++j) {
        MoeCandidate best = moe_candidate_none();
        for (int32_t i = 0; i < row.slots(); ++i) {
            const MoeCandidate c = row.candidate(lanes, i);
            if (c.rank.index == INT32_MAX || !moe_ranked_before(previous, c.rank) ||
                !moe_ranked_before(c.rank, best.rank)) {
                continue;
            }
            if (grouped) {
                const int32_t g = moe_group_of_expert(c.rank.index, group_size);
                if (!moe_group_kept(group_scores[g], g, threshold)) {
                    continue;
                }
            }
            best = c;
        }
        const MoeCandidate pick = moe_best_candidate(lanes, best);
        previous = pick.rank;
        if (j == 0) {
            first = pick.rank;
        }
        // Every lane carries the same running sum, accumulated in slot order like the reference.
        weight_sum += pick.score;
        if (lanes.lane() == j % Lanes::kWidth) {
            if (in_registers) {
                my_id = pick.rank.index;
                my_score = pick.score;
            } else {
                ids[j] = pick.rank.index;
                weights[j] = pick.score;
            }
        }
    }

    if (p.scoring == MOE_SCORING_SPARSE_MIXER) {
        // top_k is 2: `first` and `previous` are the two picks, known to every lane.
        const float threshold = 2.0f * p.jitter_eps;
        const float w0 = moe_sparse_mixer_weight(lanes, row, first.score, -1, threshold);
        const float w1 = moe_sparse_mixer_weight(lanes, row, previous.score, first.index, threshold);
        weight_sum = w0 + w1;
        for (int32_t j = lanes.lane(); j < p.top_k; j += Lanes::kWidth) {
            if (in_registers) {
                my_score = j == 0 ? w0 : w1;
            } else {
                weights[j] = j == 0 ? w0 : w1;
            }
        }
    }

    const bool divide = p.renormalize != 0 && weight_sum > 0.0f;
    if (in_registers) {
        if (lanes.lane() < p.top_k) {
            const float w = divide ? my_score / weight_sum : my_score;
            ids[lanes.lane()] = my_id;
            weights[lanes.lane()] = w * p.routed_scaling_factor;
        }
    } else {
        for (int32_t j = lanes.lane(); j < p.top_k; j += Lanes::kWidth) {
            float w = weights[j];
            if (divide) {
                w = w / weight_sum;
            }
            weights[j] = w * p.routed_scaling_factor;
        }
    }
    // The next row of these lanes overwrites the group scores read above.
    lanes.sync();
}

#endif  // MOE_ROUTING_CUH
