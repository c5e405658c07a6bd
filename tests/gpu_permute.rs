//! The GPU permutation and gather against the CPU reference: every map equal entry for entry, every
//! gathered row bit-identical, on seeded random routings (single-block and multi-block paths, block
//! padding, empty and hot experts), plus out-of-range ids, repeatability and bad input.
//!
//! Without a usable GPU each test prints `SKIPPED gpu_permute::<test>: <reason>` and passes, unless
//! `MOE_KERNELS_REQUIRE_GPU=1`. The seed is printed; `MOE_TEST_SEED` replays it.

mod common;

use cudarc::driver::CudaSlice;
use half::{bf16, f16};
use moe_kernels::cpu::permute::{gather as cpu_gather, permute as cpu_permute, Permutation};
use moe_kernels::gpu::{gather, permute, Device, DeviceStatus, GpuElement, GpuPermutation};
use moe_kernels::{Element, MatMut, MatRef, MoeError};
use rand::rngs::StdRng;
use rand::Rng;

fn device(test: &str) -> Option<Device> {
    common::gpu("gpu_permute", test)
}

/// The permutation's maps, downloaded.
struct Maps {
    offsets: Vec<i64>,
    counts: Vec<i64>,
    row_source: Vec<i64>,
    slot_row: Vec<i64>,
}

fn download(dev: &Device, perm: &GpuPermutation) -> Maps {
    let s = dev.stream();
    Maps {
        offsets: s.clone_dtoh(&perm.expert_offsets()).unwrap(),
        counts: s.clone_dtoh(&perm.expert_counts()).unwrap(),
        row_source: s.clone_dtoh(&perm.row_source()).unwrap(),
        slot_row: s.clone_dtoh(&perm.slot_row()).unwrap(),
    }
}

/// Every map entry equal to the CPU's; rows past the total marked -1.
fn assert_maps(what: &str, got: &Maps, cpu: &Permutation) {
    let want: Vec<i64> = cpu.expert_offsets().iter().map(|&v| v as i64).collect();
    assert_eq!(got.offsets, want, "{what}: offsets");
    let want: Vec<i64> = cpu.expert_counts().iter().map(|&v| v as i64).collect();
    assert_eq!(got.counts, want, "{what}: counts");
    let rows = cpu.num_rows();
    for (r, src) in cpu.row_source().iter().enumerate() {
        assert_eq!(
            got.row_source[r],
            src.map_or(-1, |f| f as i64),
            "{what}: row_source[{r}]"
        );
    }
    assert!(
        got.row_source[rows..].iter().all(|&v| v == -1),
        "{what}: rows past the total"
    );
    let want: Vec<i64> = cpu
        .slot_row()
        .iter()
        .map(|v| v.map_or(-1, |v| v as i64))
        .collect();
    assert_eq!(got.slot_row, want, "{what}: slot_row");
}

/// Permute `ids` on the GPU into `perm`, after filling `perm` with the maps of a different routing
/// (stale entries act as poison: an entry the kernels fail to write shows as a mismatch).
#[allow(clippy::too_many_arguments)]
fn run_permute(
    dev: &Device,
    rng: &mut StdRng,
    ids: &[i32],
    t: usize,
    e: usize,
    block: usize,
    perm: &mut GpuPermutation,
    status: &mut DeviceStatus,
) -> Result<(), MoeError> {
    let s = dev.stream();
    let k = perm.top_k();
    let stale_t = perm.max_tokens();
    let stale = common::random_ids(rng, stale_t, e, k, true, false);
    let stale = s.clone_htod(&stale)?;
    permute(dev, &stale.as_view(), stale_t, e, block, perm, status)?;
    let ids: CudaSlice<i32> = s.clone_htod(ids)?;
    permute(dev, &ids.as_view(), t, e, block, perm, status)
}

#[test]
fn maps_equal_the_cpu_permutation() {
    let Some(dev) = device("maps_equal_the_cpu_permutation") else {
        return;
    };
    let mut rng = common::rng("gpu_permute_maps");
    let mut status = DeviceStatus::new(&dev).unwrap();
    for case in 0..60 {
        let e = [1usize, 8, 60, 128, 256, 1000][case % 6];
        let k = [1usize, 2, 6, 8][rng.random_range(0..4)].min(e);
        // 1 to 4097 tokens take the single-block kernel for k * T <= 16384; 20000 tokens the
        // three-launch path.
        let t = [1usize, 7, 1000, 4097, 20_000][rng.random_range(0..5)];
        let block = [1usize, 1, 16, 64][rng.random_range(0..4)];
        let (hot, skew) = (rng.random_bool(0.2), rng.random_bool(0.3));
        let ids = common::random_ids(&mut rng, t, e, k, hot, skew);
        let what = format!("T = {t}, k = {k}, E = {e}, block = {block}");
        let mut perm = GpuPermutation::new(&dev, t, k, e, block).unwrap();
        run_permute(&dev, &mut rng, &ids, t, e, block, &mut perm, &mut status).unwrap();
        let cpu = cpu_permute(MatRef::new("ids", &ids, t, k).unwrap(), e, block).unwrap();
        assert_maps(&what, &download(&dev, &perm), &cpu);
        status.check().unwrap();
    }
}

#[test]
fn fewer_tokens_than_the_capacity_and_no_tokens() {
    let Some(dev) = device("fewer_tokens_than_the_capacity_and_no_tokens") else {
        return;
    };
    let mut rng = common::rng("gpu_permute_capacity");
    let (e, k) = (64usize, 6usize);
    let mut perm = GpuPermutation::new(&dev, 5000, k, e, 1).unwrap();
    let mut status = DeviceStatus::new(&dev).unwrap();
    for t in [3000usize, 1, 4999, 0, 17] {
        let ids = common::random_ids(&mut rng, t, e, k, false, false);
        run_permute(&dev, &mut rng, &ids, t, e, 1, &mut perm, &mut status).unwrap();
        assert_eq!(perm.num_tokens(), t);
        let cpu = cpu_permute(MatRef::new("ids", &ids, t, k).unwrap(), e, 1).unwrap();
        assert_maps(&format!("T = {t} of 5000"), &download(&dev, &perm), &cpu);
    }
    status.check().unwrap();
}

#[test]
fn out_of_range_ids_are_skipped_and_reported() {
    let Some(dev) = device("out_of_range_ids_are_skipped_and_reported") else {
        return;
    };
    let mut rng = common::rng("gpu_permute_bad_ids");
    for t in [5usize, 3000] {
        let (e, k) = (16usize, 4usize);
        let mut ids = common::random_ids(&mut rng, t, e, k, false, false);
        ids[4 * k / 2 + 1] = 16;
        ids[t * k - 1] = -1;
        ids[3] = i32::MIN;
        let mut perm = GpuPermutation::new(&dev, t, k, e, 1).unwrap();
        let mut status = DeviceStatus::new(&dev).unwrap();
        let s = dev.stream();
        let ids_dev = s.clone_htod(&ids).unwrap();
        permute(&dev, &ids_dev.as_view(), t, e, 1, &mut perm, &mut status).unwrap();
        match status.check() {
            Err(MoeError::ExpertIdOutOfRange {
                token: 0,
                slot: 3,
                id,
                num_experts: 16,
            }) if id == i32::MIN as i64 => {}
            other => panic!("T = {t}: expected the bad id at (0, 3), got {other:?}"),
        }
        let maps = download(&dev, &perm);
        for bad in [3, 4 * k / 2 + 1, t * k - 1] {
            assert_eq!(maps.slot_row[bad], -1);
        }
        // The valid entries are sorted as the CPU sorts the routing without them: compare against
        // the CPU on ids where the bad entries are replaced, restricted to the valid positions.
        let total: i64 = maps.counts.iter().sum();
        assert_eq!(total as usize, t * k - 3);
        let mut seen = vec![false; t * k];
        for r in 0..maps.offsets[e] as usize {
            let f = maps.row_source[r] as usize;
            assert!(!std::mem::replace(&mut seen[f], true));
            assert_eq!(maps.slot_row[f], r as i64);
        }
        for x in 0..e {
            let seg = &maps.row_source[maps.offsets[x] as usize..maps.offsets[x + 1] as usize];
            assert!(
                seg.windows(2).all(|w| w[0] < w[1]),
                "stable order in expert {x}"
            );
            assert!(seg.iter().all(|&f| ids[f as usize] == x as i32));
        }
        status.reset().unwrap();
        status.check().unwrap();
    }
}

/// Random hidden states of type `T` (exact in `T`) and their `f32` values.
fn random_x<T: Element>(rng: &mut StdRng, n: usize) -> Vec<T> {
    common::randn(rng, n, 1.0)
        .into_iter()
        .map(T::from_f32)
        .collect()
}

/// Gather on the GPU (the output poisoned with NaN first) and compare every row bit for bit with
/// the CPU gather; rows past the padded total must keep the poison. `x_offset` shifts `x` by that
/// many elements inside a larger buffer, to test misaligned rows.
#[allow(clippy::too_many_arguments)]
fn check_gather<T: GpuElement>(
    dev: &Device,
    rng: &mut StdRng,
    t: usize,
    h: usize,
    e: usize,
    k: usize,
    block: usize,
    x_offset: usize,
) {
    let what = format!(
        "{}: T = {t}, H = {h}, E = {e}, k = {k}, block = {block}, offset = {x_offset}",
        T::DTYPE
    );
    let s = dev.stream();
    let hot = rng.random_bool(0.3);
    let ids = common::random_ids(rng, t, e, k, hot, false);
    let mut perm = GpuPermutation::new(dev, t, k, e, block).unwrap();
    let mut status = DeviceStatus::new(dev).unwrap();
    let ids_dev = s.clone_htod(&ids).unwrap();
    permute(dev, &ids_dev.as_view(), t, e, block, &mut perm, &mut status).unwrap();

    let x: Vec<T> = random_x(rng, t * h + x_offset);
    let x_dev = s.clone_htod(&x).unwrap();
    let rows = perm.num_rows_bound();
    let nan = T::from_f32(f32::NAN);
    let mut out = s.clone_htod(&vec![nan; rows * h]).unwrap();
    gather(
        dev,
        &x_dev.slice(x_offset..),
        h,
        &perm,
        &mut out.as_view_mut(),
    )
    .unwrap();
    let got = s.clone_dtoh(&out).unwrap();

    let cpu = cpu_permute(MatRef::new("ids", &ids, t, k).unwrap(), e, block).unwrap();
    let total = cpu.num_rows();
    let mut want = vec![T::default(); total * h];
    cpu_gather(
        MatRef::new("x", &x[x_offset..], t, h).unwrap(),
        &cpu,
        &mut MatMut::new("out", &mut want, total, h).unwrap(),
    )
    .unwrap();
    let bits = |v: &T| v.to_f32().to_bits();
    for (i, (g, w)) in got[..total * h].iter().zip(&want).enumerate() {
        assert_eq!(bits(g), bits(w), "{what}: row {}, column {}", i / h, i % h);
    }
    assert!(
        got[total * h..].iter().all(|v| v.to_f32().is_nan()),
        "{what}: rows past the total must be left alone"
    );
    status.check().unwrap();
}

#[test]
fn gather_equals_the_cpu_gather() {
    let Some(dev) = device("gather_equals_the_cpu_gather") else {
        return;
    };
    let mut rng = common::rng("gpu_gather");
    for &(t, h, e, k, block) in &[
        (1usize, 4096usize, 8usize, 2usize, 1usize),
        (7, 2048, 60, 4, 16),
        (1000, 256, 128, 8, 1),
        (4097, 64, 256, 8, 64),
        (33, 7, 8, 2, 4),
        (100, 1, 4, 1, 1),
    ] {
        // Aligned (16-byte units when the row allows) and shifted by one element (element units).
        for offset in [0, 1] {
            check_gather::<bf16>(&dev, &mut rng, t, h, e, k, block, offset);
            check_gather::<f16>(&dev, &mut rng, t, h, e, k, block, offset);
            check_gather::<f32>(&dev, &mut rng, t, h, e, k, block, offset);
        }
    }
}

#[test]
fn repeated_runs_give_identical_bits() {
    let Some(dev) = device("repeated_runs_give_identical_bits") else {
        return;
    };
    let mut rng = common::rng("gpu_permute_repeat");
    let (t, e, k, h) = (20_000usize, 64usize, 6usize, 128usize);
    let ids = common::random_ids(&mut rng, t, e, k, false, false);
    let x: Vec<bf16> = random_x(&mut rng, t * h);
    let s = dev.stream();
    let ids_dev = s.clone_htod(&ids).unwrap();
    let x_dev = s.clone_htod(&x).unwrap();
    let mut status = DeviceStatus::new(&dev).unwrap();
    let mut first: Option<(Vec<i64>, Vec<i64>, Vec<bf16>)> = None;
    for _ in 0..3 {
        let mut perm = GpuPermutation::new(&dev, t, k, e, 1).unwrap();
        permute(&dev, &ids_dev.as_view(), t, e, 1, &mut perm, &mut status).unwrap();
        let mut out = s
            .clone_htod(&vec![bf16::NAN; perm.num_rows_bound() * h])
            .unwrap();
        gather(&dev, &x_dev.as_view(), h, &perm, &mut out.as_view_mut()).unwrap();
        let maps = download(&dev, &perm);
        let run = (maps.row_source, maps.slot_row, s.clone_dtoh(&out).unwrap());
        match &first {
            None => first = Some(run),
            Some(f) => {
                assert_eq!(f.0, run.0);
                assert_eq!(f.1, run.1);
                assert!(f
                    .2
                    .iter()
                    .zip(&run.2)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
    status.check().unwrap();
}

#[test]
fn bad_input_is_rejected_before_launch() {
    let Some(dev) = device("bad_input_is_rejected_before_launch") else {
        return;
    };
    let s = dev.stream();
    let (t, e, k, h) = (4usize, 8usize, 2usize, 16usize);
    let mut perm = GpuPermutation::new(&dev, t, k, e, 1).unwrap();
    let mut status = DeviceStatus::new(&dev).unwrap();
    let ids = s.clone_htod(&[0i32, 1, 2, 3, 4, 5, 6, 7]).unwrap();
    let shape = |r: Result<(), MoeError>| matches!(r, Err(MoeError::ShapeMismatch { .. }));
    let invalid = |r: Result<(), MoeError>| matches!(r, Err(MoeError::InvalidConfig(_)));
    assert!(shape(permute(
        &dev,
        &ids.slice(..7),
        t,
        e,
        1,
        &mut perm,
        &mut status
    )));
    assert!(shape(permute(
        &dev,
        &ids.as_view(),
        5,
        e,
        1,
        &mut perm,
        &mut status
    )));
    assert!(invalid(permute(
        &dev,
        &ids.as_view(),
        t,
        9,
        1,
        &mut perm,
        &mut status
    )));
    assert!(invalid(permute(
        &dev,
        &ids.as_view(),
        t,
        e,
        4,
        &mut perm,
        &mut status
    )));
    assert!(invalid(permute(
        &dev,
        &ids.as_view(),
        t,
        0,
        1,
        &mut perm,
        &mut status
    )));
    assert!(invalid(permute(
        &dev,
        &ids.as_view(),
        t,
        e,
        0,
        &mut perm,
        &mut status
    )));
    assert!(matches!(
        GpuPermutation::new(&dev, t, 0, e, 1),
        Err(MoeError::InvalidConfig(_))
    ));
    permute(&dev, &ids.as_view(), t, e, 1, &mut perm, &mut status).unwrap();
    let x = s.clone_htod(&vec![bf16::ONE; t * h]).unwrap();
    let mut out = s.clone_htod(&vec![bf16::NAN; t * k * h]).unwrap();
    assert!(shape(gather(
        &dev,
        &x.slice(..t * h - 1),
        h,
        &perm,
        &mut out.as_view_mut()
    )));
    assert!(shape(gather(
        &dev,
        &x.as_view(),
        h,
        &perm,
        &mut out.slice_mut(..t * k * h - 1)
    )));
    assert!(invalid(gather(
        &dev,
        &x.slice(..0),
        0,
        &perm,
        &mut out.slice_mut(..0)
    )));
    // Nothing was written by the rejected gathers.
    assert!(s.clone_dtoh(&out).unwrap().iter().all(|v| v.is_nan()));
    status.check().unwrap();
}

/// Small cases of every kernel path (single-block and three-launch permutation, padding, 16-byte and
/// element gathers), for `compute-sanitizer` (scripts/gpu-check.sh runs the `sanitizer_smoke` tests).
#[test]
fn sanitizer_smoke() {
    let Some(dev) = device("sanitizer_smoke") else {
        return;
    };
    let mut rng = common::rng("gpu_permute_sanitizer_smoke");
    let mut status = DeviceStatus::new(&dev).unwrap();
    // 2100 * 8 = 16800 pairs take the three-launch path.
    for &(t, e, k, block) in &[
        (3usize, 8usize, 2usize, 4usize),
        (2100, 64, 8, 1),
        (2100, 8, 8, 16),
    ] {
        let ids = common::random_ids(&mut rng, t, e, k, false, false);
        let mut perm = GpuPermutation::new(&dev, t, k, e, block).unwrap();
        run_permute(&dev, &mut rng, &ids, t, e, block, &mut perm, &mut status).unwrap();
        let cpu = cpu_permute(MatRef::new("ids", &ids, t, k).unwrap(), e, block).unwrap();
        assert_maps("sanitizer smoke", &download(&dev, &perm), &cpu);
    }
    status.check().unwrap();
    check_gather::<bf16>(&dev, &mut rng, 5, 64, 8, 2, 4, 0);
    check_gather::<bf16>(&dev, &mut rng, 5, 64, 8, 2, 4, 1);
    check_gather::<f32>(&dev, &mut rng, 3, 7, 4, 2, 1, 0);
}
