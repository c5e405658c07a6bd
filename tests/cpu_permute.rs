//! CPU permutation: bijection, monotone offsets, stability, padding, and the gather.

mod common;

use moe_kernels::cpu::permute::{gather, permute};
use moe_kernels::{MatMut, MatRef};
use rand::Rng;

#[test]
fn permutation_invariants_on_random_routings() {
    let mut rng = common::rng("permutation_invariants_on_random_routings");
    for case in 0..80 {
        let e = [1usize, 2, 7, 8, 60, 128, 256][case % 7];
        let k = rng.random_range(1..=e.min(8));
        let t = [0usize, 1, 5, 64, 1500][rng.random_range(0..5)];
        let block = [1usize, 1, 4, 16, 64][rng.random_range(0..5)];
        let hot = rng.random_bool(0.2);
        let ids = common::random_ids(&mut rng, t, e, k, hot, false);
        let p = permute(MatRef::new("ids", &ids, t, k).unwrap(), e, block).unwrap();

        // Offsets: start at 0, monotone, each segment the real count padded to the block size.
        let off = p.expert_offsets();
        assert_eq!(off.len(), e + 1);
        assert_eq!(off[0], 0);
        assert_eq!(p.expert_counts().iter().sum::<usize>(), t * k);
        for x in 0..e {
            let c = ids.iter().filter(|&&i| i as usize == x).count();
            assert_eq!(p.expert_counts()[x], c, "count of expert {x}");
            let seg = off[x + 1] - off[x];
            assert!(off[x + 1] >= off[x]);
            assert_eq!(seg, c.div_ceil(block) * block, "segment of expert {x}");
        }
        assert_eq!(p.num_rows(), off[e]);

        // Bijection between real rows and (token, slot) pairs; rows sorted by expert, stable in token order.
        let mut seen = vec![false; t * k];
        for x in 0..e {
            let mut last_token = None;
            for r in off[x]..off[x + 1] {
                match p.source(r) {
                    Some((tok, slot)) => {
                        assert_eq!(
                            ids[tok * k + slot] as usize,
                            x,
                            "row {r} in expert {x}'s segment"
                        );
                        assert!(
                            !seen[tok * k + slot],
                            "(token {tok}, slot {slot}) appears twice"
                        );
                        seen[tok * k + slot] = true;
                        assert_eq!(p.row_of(tok, slot), Some(r), "inverse map of row {r}");
                        assert!(
                            last_token < Some(tok),
                            "expert {x}: rows not in token order"
                        );
                        last_token = Some(tok);
                        assert!(
                            r - off[x] < p.expert_counts()[x],
                            "real rows come before padding"
                        );
                    }
                    None => assert!(
                        r - off[x] >= p.expert_counts()[x],
                        "padding only at the end"
                    ),
                }
            }
        }
        assert!(seen.iter().all(|&s| s), "every (token, slot) has a row");
    }
}

#[test]
fn gather_copies_token_rows_and_zeroes_padding() {
    let mut rng = common::rng("gather_copies_token_rows_and_zeroes_padding");
    let (t, e, k, h, block) = (37, 6, 2, 13, 8);
    let ids = common::random_ids(&mut rng, t, e, k, false, false);
    let x: Vec<half::bf16> = common::randn(&mut rng, t * h, 1.0)
        .into_iter()
        .map(half::bf16::from_f32)
        .collect();
    let p = permute(MatRef::new("ids", &ids, t, k).unwrap(), e, block).unwrap();
    let mut out = vec![half::bf16::from_f32(f32::NAN); p.num_rows() * h];
    gather(
        MatRef::new("x", &x, t, h).unwrap(),
        &p,
        &mut MatMut::new("out", &mut out, p.num_rows(), h).unwrap(),
    )
    .unwrap();
    for r in 0..p.num_rows() {
        let row = &out[r * h..(r + 1) * h];
        match p.source(r) {
            Some((tok, _)) => assert_eq!(row, &x[tok * h..(tok + 1) * h], "row {r}"),
            None => assert!(row.iter().all(|v| v.to_f32() == 0.0), "padding row {r}"),
        }
    }
}

#[test]
fn all_tokens_on_one_expert_and_empty_experts() {
    let (t, e) = (1001, 16);
    let ids = vec![5i32; t];
    let p = permute(MatRef::new("ids", &ids, t, 1).unwrap(), e, 1).unwrap();
    assert_eq!(p.expert_counts()[5], t);
    assert_eq!(p.expert_offsets()[5], 0);
    assert_eq!(p.expert_offsets()[6], t);
    assert!((0..t).all(|r| p.source(r) == Some((r, 0))));
}
