//! Expert parallelism: which of a layer's experts live on this rank ([`ExpertMap`]).
//!
//! As vLLM's `expert_map` works: routing chooses among all `E` global experts on every rank; the
//! permutation, the expert GEMMs and the combine of one rank keep only the (token, slot) pairs whose
//! expert is local, so each rank's output is a partial sum, and the engine's all-reduce (or
//! all-to-all) adds the ranks' partial sums into the layer's output.

use crate::error::{MoeError, Result};

/// A map from global to local expert ids: entry `g` is the local id of global expert `g` on this
/// rank, or -1 when `g` lives on another rank. The local ids are `0..num_local`, each used exactly
/// once, so the rank's expert weights are `[num_local, ..]` in local order.
///
/// The shared experts belong to every token, not to a rank: exactly one rank should add them
/// ([`ExpertMap::with_shared_experts`], set for rank 0 by [`ExpertMap::contiguous`]), or the
/// engine runs them itself, so that the ranks' partial sums add up to the whole layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExpertMap {
    global_to_local: Vec<i32>,
    num_local: usize,
    shared_experts: bool,
}

impl ExpertMap {
    /// A map from its entries (`-1` or a local id), without the shared experts.
    ///
    /// Errors: [`MoeError::InvalidConfig`] for no experts, more than 2^31 - 1 of them, an entry
    /// below -1, or local ids that are not exactly `0..num_local`, each once.
    pub fn new(global_to_local: Vec<i32>) -> Result<Self> {
        let e = global_to_local.len();
        if e == 0 || e > i32::MAX as usize {
            return Err(MoeError::InvalidConfig(format!(
                "an expert map has 1 to 2^31 - 1 entries, got {e}"
            )));
        }
        let num_local = global_to_local.iter().filter(|&&l| l >= 0).count();
        let mut seen = vec![false; num_local];
        for (g, &l) in global_to_local.iter().enumerate() {
            if l < -1 || l as i64 >= num_local as i64 {
                return Err(MoeError::InvalidConfig(format!(
                    "expert map entry {g} is {l}: an entry is -1 (another rank's expert) or a local \
                     id below the {num_local} local experts"
                )));
            }
            if l >= 0 {
                if seen[l as usize] {
                    return Err(MoeError::InvalidConfig(format!(
                        "local expert {l} is mapped twice (global expert {g} and an earlier one)"
                    )));
                }
                seen[l as usize] = true;
            }
        }
        Ok(ExpertMap {
            global_to_local,
            num_local,
            shared_experts: false,
        })
    }

    /// Rank `rank` of `num_ranks` in the linear split: each rank holds a contiguous range of global
    /// experts, `E / num_ranks` of them, the first `E % num_ranks` ranks one more (so any `E` and any
    /// rank count work, and a rank may hold none). Rank 0 adds the shared experts.
    ///
    /// Errors: [`MoeError::InvalidConfig`] for `num_ranks = 0`, `rank >= num_ranks` or an expert
    /// count [`ExpertMap::new`] rejects.
    pub fn contiguous(num_experts: usize, rank: usize, num_ranks: usize) -> Result<Self> {
        if num_ranks == 0 || rank >= num_ranks {
            return Err(MoeError::InvalidConfig(format!(
                "rank {rank} of {num_ranks}: the rank must be below the rank count"
            )));
        }
        let (base, extra) = (num_experts / num_ranks, num_experts % num_ranks);
        let start = rank * base + rank.min(extra);
        let len = base + usize::from(rank < extra);
        let map = (0..num_experts)
            .map(|g| {
                if (start..start + len).contains(&g) {
                    (g - start) as i32
                } else {
                    -1
                }
            })
            .collect();
        Ok(ExpertMap::new(map)?.with_shared_experts(rank == 0))
    }

    /// The same map, adding the shared experts on this rank or not.
    pub fn with_shared_experts(mut self, add: bool) -> Self {
        self.shared_experts = add;
        self
    }

    /// Global experts `E` (the router's).
    pub fn num_global(&self) -> usize {
        self.global_to_local.len()
    }

    /// Experts on this rank.
    pub fn num_local(&self) -> usize {
        self.num_local
    }

    /// Whether this rank adds the shared experts to its partial sum.
    pub fn shared_experts(&self) -> bool {
        self.shared_experts
    }

    /// `[E]` local id of each global expert, -1 for another rank's.
    pub fn global_to_local(&self) -> &[i32] {
        &self.global_to_local
    }

    /// The local id of global expert `global`, `None` when it lives on another rank (or is out of
    /// range).
    pub fn local(&self, global: usize) -> Option<usize> {
        self.global_to_local
            .get(global)
            .and_then(|&l| usize::try_from(l).ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contiguous_splits_cover_every_expert_once() {
        for e in [1usize, 7, 8, 60, 256] {
            for ranks in [1usize, 2, 3, 8, 9] {
                let mut owner = vec![None; e];
                for r in 0..ranks {
                    let m = ExpertMap::contiguous(e, r, ranks).unwrap();
                    assert_eq!(m.num_global(), e);
                    assert_eq!(m.shared_experts(), r == 0);
                    assert!(m.num_local() == e / ranks || m.num_local() == e / ranks + 1);
                    for (g, o) in owner.iter_mut().enumerate() {
                        if let Some(l) = m.local(g) {
                            assert!(o.is_none(), "expert {g} on two ranks");
                            assert!(l < m.num_local());
                            *o = Some(r);
                        }
                    }
                }
                assert!(owner.iter().all(Option::is_some), "E {e}, {ranks} ranks");
            }
        }
    }

    #[test]
    fn bad_maps_are_rejected() {
        for bad in [
            vec![],
            vec![0, 0],
            vec![1, -1],
            vec![-2, 0],
            vec![0, 2, 1, 5],
        ] {
            assert!(
                matches!(ExpertMap::new(bad.clone()), Err(MoeError::InvalidConfig(_))),
                "{bad:?}"
            );
        }
        assert!(ExpertMap::contiguous(8, 2, 2).is_err());
        assert!(ExpertMap::contiguous(8, 0, 0).is_err());
        let m = ExpertMap::new(vec![-1, 1, -1, 0]).unwrap();
        assert_eq!((m.num_local(), m.local(3), m.local(0)), (2, Some(0), None));
        assert_eq!(ExpertMap::new(vec![-1, -1]).unwrap().num_local(), 0);
    }
}
