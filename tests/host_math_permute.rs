//! The permutation kernels' algorithm (kernels/permute.cuh), compiled for the host and run on one
//! serial lane chunk by chunk, against `cpu::permute::permute`: every map must be equal, entry for
//! entry, for any chunking; plus the launch plan's invariants. Runs on every machine.

mod common;

use moe_kernels::cpu::permute::{permute as cpu_permute, permute_mapped, Permutation};
use moe_kernels::host_math::{self, HostPermutation};
use moe_kernels::{ExpertMap, MatRef, MoeError};
use rand::Rng;

/// Assert the host twin's maps equal the CPU reference's exactly.
fn assert_matches_cpu(
    what: &str,
    ids: &[i32],
    k: usize,
    e: usize,
    block: usize,
    got: &HostPermutation,
) {
    let t = ids.len() / k;
    let cpu = cpu_permute(MatRef::new("ids", ids, t, k).unwrap(), e, block).unwrap();
    assert_equal(what, &cpu, got);
}

/// Assert the host twin's maps equal `cpu`'s exactly.
fn assert_equal(what: &str, cpu: &Permutation, got: &HostPermutation) {
    let offsets: Vec<i64> = cpu.expert_offsets().iter().map(|&v| v as i64).collect();
    assert_eq!(got.expert_offsets, offsets, "{what}: offsets");
    let counts: Vec<i64> = cpu.expert_counts().iter().map(|&v| v as i64).collect();
    assert_eq!(got.expert_counts, counts, "{what}: counts");
    let rows = cpu.num_rows();
    assert!(
        got.row_source.len() >= rows,
        "{what}: row bound below the total"
    );
    for (r, src) in cpu.row_source().iter().enumerate() {
        let want = src.map_or(-1, |f| f as i64);
        assert_eq!(got.row_source[r], want, "{what}: row_source[{r}]");
    }
    assert!(
        got.row_source[rows..].iter().all(|&v| v == -1),
        "{what}: rows past the total must be marked -1"
    );
    let slots: Vec<i64> = cpu
        .slot_row()
        .iter()
        .map(|v| v.map_or(-1, |v| v as i64))
        .collect();
    assert_eq!(got.slot_row, slots, "{what}: slot_row");
    assert!(
        got.status.is_none(),
        "{what}: unexpected status {:?}",
        got.status
    );
}

#[test]
fn host_twin_equals_cpu_permutation_for_any_chunking() {
    let mut rng = common::rng("host_twin_equals_cpu_permutation_for_any_chunking");
    for case in 0..400 {
        let e = [1usize, 2, 7, 8, 60, 128, 256, 1000][case % 8];
        let k = rng.random_range(1..=e.min(8));
        let t = [1usize, 2, 7, 33, 100, 1000, 4097][rng.random_range(0..7)];
        let block = [1usize, 1, 2, 4, 16, 64][rng.random_range(0..6)];
        let hot = rng.random_bool(0.2);
        let skew = rng.random_bool(0.3);
        let ids = common::random_ids(&mut rng, t, e, k, hot, skew);
        // The plan's chunking, and arbitrary ones: a serial lane takes any chunk size.
        let chunk = match case % 4 {
            0 => None,
            1 => Some(1),
            2 => Some(rng.random_range(1..64)),
            _ => Some(rng.random_range(1..=t * k)),
        };
        let what = format!("T = {t}, k = {k}, E = {e}, block = {block}, chunk = {chunk:?}");
        let got = host_math::permute(&ids, k, e, None, block, chunk).unwrap();
        assert_matches_cpu(&what, &ids, k, e, block, &got);
    }
}

#[test]
fn large_inputs_use_the_multi_chunk_plan_and_still_match() {
    let mut rng = common::rng("large_inputs_use_the_multi_chunk_plan_and_still_match");
    for &(t, e, k) in &[
        (4097usize, 256usize, 8usize),
        (20_000, 64, 6),
        (70_000, 8, 2),
    ] {
        let plan = host_math::permute_plan(t * k, e);
        assert!(!plan.single_block && plan.num_chunks > 1, "{plan:?}");
        let ids = common::random_ids(&mut rng, t, e, k, false, false);
        let got = host_math::permute(&ids, k, e, None, 1, None).unwrap();
        assert_matches_cpu(&format!("T = {t}, E = {e}, k = {k}"), &ids, k, e, 1, &got);
    }
}

#[test]
fn empty_experts_one_hot_expert_and_no_tokens() {
    // Every token picks experts 0..k: the others are empty.
    let (t, e, k) = (300usize, 64usize, 4usize);
    let ids: Vec<i32> = (0..t * k).map(|f| (f % k) as i32).collect();
    for block in [1, 16] {
        let got = host_math::permute(&ids, k, e, None, block, Some(37)).unwrap();
        assert_matches_cpu("hot experts", &ids, k, e, block, &got);
    }
    // T = 0: zero offsets and counts, no rows.
    let none = host_math::permute(&[], k, e, None, 16, None).unwrap();
    assert!(none.expert_offsets.iter().all(|&v| v == 0));
    assert!(none.expert_counts.iter().all(|&v| v == 0));
    assert!(none.row_source.is_empty() && none.slot_row.is_empty());
}

#[test]
fn out_of_range_ids_are_skipped_and_the_lowest_is_reported() {
    let mut rng = common::rng("out_of_range_ids_are_skipped_and_the_lowest_is_reported");
    for _ in 0..100 {
        let (e, k) = (16usize, 4usize);
        let t = rng.random_range(1..200);
        let mut ids = common::random_ids(&mut rng, t, e, k, false, false);
        let bad: Vec<usize> = (0..rng.random_range(1..5))
            .map(|_| rng.random_range(0..t * k))
            .collect();
        for &b in &bad {
            ids[b] = if rng.random_bool(0.5) {
                -3
            } else {
                16 + b as i32
            };
        }
        let first = *bad.iter().min().unwrap();
        let got = host_math::permute(&ids, k, e, None, 1, Some(rng.random_range(1..40))).unwrap();
        // The status names the lowest offending (token, slot), like the CPU's error.
        let cpu_err = cpu_permute(MatRef::new("ids", &ids, t, k).unwrap(), e, 1).unwrap_err();
        match (&got.status, &cpu_err) {
            (
                Some(MoeError::ExpertIdOutOfRange {
                    token,
                    slot,
                    id,
                    num_experts,
                }),
                MoeError::ExpertIdOutOfRange {
                    token: ct,
                    slot: cs,
                    id: ci,
                    num_experts: ce,
                },
            ) => {
                assert_eq!((token, slot, id, num_experts), (ct, cs, ci, ce));
                assert_eq!(token * k + slot, first);
            }
            other => panic!("expected matching out-of-range errors, got {other:?}"),
        }
        // Skipped positions have no row; the valid ones are sorted exactly as without them.
        let valid: Vec<usize> = (0..t * k).filter(|f| !bad.contains(f)).collect();
        for &b in &bad {
            assert_eq!(got.slot_row[b], -1);
        }
        let total: i64 = got.expert_counts.iter().sum();
        assert_eq!(total as usize, valid.len());
        let mut seen = vec![false; t * k];
        for r in 0..got.expert_offsets[e] as usize {
            let f = got.row_source[r];
            assert!(f >= 0 && !bad.contains(&(f as usize)));
            assert!(!std::mem::replace(&mut seen[f as usize], true));
            assert_eq!(got.slot_row[f as usize], r as i64);
        }
        for e_ in 0..e {
            let seg = &got.row_source
                [got.expert_offsets[e_] as usize..got.expert_offsets[e_ + 1] as usize];
            assert!(
                seg.windows(2).all(|w| w[0] < w[1]),
                "stable order within expert {e_}"
            );
            assert!(seg.iter().all(|&f| ids[f as usize] == e_ as i32));
        }
    }
}

#[test]
fn plans_cover_the_input_and_respect_the_kernels_limits() {
    let mut rng = common::rng("plans_cover_the_input_and_respect_the_kernels_limits");
    let mut sizes: Vec<usize> = vec![1, 2, 31, 32, 33, 1023, 1024, 1025, 16_383, 16_384, 16_385];
    sizes.extend((0..200).map(|_| rng.random_range(1..2_000_000)));
    for &n in &sizes {
        for e in [1usize, 8, 256, 4096, 1 << 20, i32::MAX as usize] {
            let p = host_math::permute_plan(n, e);
            assert_eq!(p.chunk_size % 32, 0, "n = {n}, E = {e}: {p:?}");
            assert!(
                p.num_chunks * p.chunk_size >= n,
                "n = {n}: chunks cover the input"
            );
            assert!(
                (p.num_chunks - 1) * p.chunk_size < n,
                "n = {n}: no empty chunk"
            );
            assert_eq!(p.single_block, n <= 16_384);
            if p.single_block {
                assert!(p.num_chunks <= 32, "one chunk per warp of the block");
            } else {
                assert!(
                    p.num_chunks * e <= (1 << 22) || p.num_chunks == 1,
                    "scratch budget"
                );
            }
            // Scratch sized for n serves every smaller input.
            let most = host_math::permute_max_chunks(n, e);
            assert!(p.num_chunks <= most);
            let smaller = rng.random_range(1..=n);
            assert!(host_math::permute_plan(smaller, e).num_chunks <= most);
        }
    }
}

#[test]
fn row_bound_and_gather_token() {
    assert_eq!(host_math::permute_row_bound(10, 8, 1), 10);
    assert_eq!(host_math::permute_row_bound(10, 8, 16), 10 + 8 * 15);
    assert_eq!(host_math::permute_row_bound(3, 8, 16), 3 + 3 * 15);
    assert_eq!(host_math::permute_row_bound(0, 8, 16), 0);
    assert_eq!(host_math::gather_token(-1, 4), -1);
    assert_eq!(host_math::gather_token(0, 4), 0);
    assert_eq!(host_math::gather_token(11, 4), 2);
    assert_eq!(host_math::gather_token(11, 1), 11);
}

#[test]
fn host_twin_equals_cpu_mapped_permutation() {
    let mut rng = common::rng("host_twin_equals_cpu_mapped_permutation");
    for case in 0..300 {
        let e = [1usize, 2, 7, 8, 60, 128, 256][case % 7];
        let k = rng.random_range(1..=e.min(8));
        let t = [1usize, 2, 7, 33, 100, 1000][rng.random_range(0..6)];
        let block = [1usize, 1, 2, 16][rng.random_range(0..4)];
        let ranks = rng.random_range(1..=e + 2);
        let rank = rng.random_range(0..ranks);
        // The contiguous split, or a random subset of experts in a random local order.
        let map = if rng.random_bool(0.5) {
            ExpertMap::contiguous(e, rank, ranks).unwrap()
        } else {
            let mut table = vec![-1i32; e];
            let mut local: Vec<usize> = (0..e).filter(|_| rng.random_bool(0.4)).collect();
            for i in (1..local.len()).rev() {
                local.swap(i, rng.random_range(0..=i));
            }
            for (l, &g) in local.iter().enumerate() {
                table[g] = l as i32;
            }
            ExpertMap::new(table).unwrap()
        };
        let hot = rng.random_bool(0.2);
        let ids = common::random_ids(&mut rng, t, e, k, hot, false);
        let chunk = [None, Some(1), Some(rng.random_range(1..64))][rng.random_range(0..3)];
        let got = host_math::permute(&ids, k, e, Some(&map), block, chunk).unwrap();
        let cpu = permute_mapped(MatRef::new("ids", &ids, t, k).unwrap(), &map, block).unwrap();
        let what = format!(
            "case {case}: T {t}, E {e}, k {k}, block {block}, {} local, chunk {chunk:?}",
            map.num_local()
        );
        assert_equal(&what, &cpu, &got);
    }
}
