//! The GPU combine against the CPU reference, bit for bit (same operations in the same order, no
//! FMA contraction), for every supported type combination, vector and scalar paths, with and
//! without shared experts; and the shared-expert accumulation against a float64 oracle.
//!
//! Without a usable GPU each test prints `SKIPPED gpu_combine::<test>: <reason>` and passes, unless
//! `MOE_KERNELS_REQUIRE_GPU=1`. The seed is printed; `MOE_TEST_SEED` replays it.

mod common;

use half::{bf16, f16};
use moe_kernels::cpu::combine::combine as cpu_combine;
use moe_kernels::cpu::permute::permute as cpu_permute;
use moe_kernels::gpu::{
    combine, permute, shared_expert_accumulate, Device, DeviceStatus, GpuElement, GpuPermutation,
};
use moe_kernels::{MatMut, MatRef, MoeError};
use rand::rngs::StdRng;

fn device(test: &str) -> Option<Device> {
    common::gpu("gpu_combine", test)
}

fn values<T: GpuElement>(rng: &mut StdRng, n: usize, scale: f32) -> Vec<T> {
    common::randn(rng, n, scale)
        .into_iter()
        .map(T::from_f32)
        .collect()
}

/// One combine of `Y` expert outputs, optional `S` shared output, into `O`, on the GPU (output
/// poisoned with NaN) and on the CPU, compared bit for bit. `shift` offsets the output inside its
/// buffer by one element (misaligned: the scalar path).
#[allow(clippy::too_many_arguments)]
fn check<Y: GpuElement, S: GpuElement, O: GpuElement>(
    dev: &Device,
    rng: &mut StdRng,
    t: usize,
    h: usize,
    e: usize,
    k: usize,
    block: usize,
    with_shared: bool,
    shift: usize,
) {
    let what = format!(
        "Y = {}, S = {}, O = {}: T = {t}, H = {h}, E = {e}, k = {k}, block = {block}, shift = {shift}",
        Y::DTYPE,
        if with_shared { S::DTYPE.name() } else { "none" },
        O::DTYPE
    );
    let s = dev.stream();
    let ids = common::random_ids(rng, t, e, k, false, false);
    let mut perm = GpuPermutation::new(dev, t, k, e, block).unwrap();
    let mut status = DeviceStatus::new(dev).unwrap();
    let ids_dev = s.clone_htod(&ids).unwrap();
    permute(dev, &ids_dev.as_view(), t, e, block, &mut perm, &mut status).unwrap();
    let rows = perm.num_rows_bound();

    let expert_out: Vec<Y> = values(rng, rows * h, 1.0);
    let weights: Vec<f32> = common::uniform(rng, t * k, 0.0, 1.0);
    let shared: Vec<S> = values(rng, t * h, 0.5);
    let y_dev = s.clone_htod(&expert_out).unwrap();
    let w_dev = s.clone_htod(&weights).unwrap();
    let sh_dev = s.clone_htod(&shared).unwrap();
    let mut out = s
        .clone_htod(&vec![O::from_f32(f32::NAN); t * h + shift])
        .unwrap();
    let sh_view = sh_dev.as_view();
    combine::<Y, S, O>(
        dev,
        &y_dev.as_view(),
        h,
        &perm,
        &w_dev.as_view(),
        with_shared.then_some(&sh_view),
        &mut out.slice_mut(shift..),
    )
    .unwrap_or_else(|err| panic!("{what}: {err}"));
    let got = s.clone_dtoh(&out).unwrap();
    status.check().unwrap();

    let cpu_perm = cpu_permute(MatRef::new("ids", &ids, t, k).unwrap(), e, block).unwrap();
    let total = cpu_perm.num_rows();
    let mut want = vec![O::default(); t * h];
    cpu_combine(
        MatRef::new("expert_out", &expert_out[..total * h], total, h).unwrap(),
        &cpu_perm,
        MatRef::new("weights", &weights, t, k).unwrap(),
        with_shared.then(|| MatRef::new("shared", &shared, t, h).unwrap()),
        &mut MatMut::new("out", &mut want, t, h).unwrap(),
    )
    .unwrap();
    assert!(
        got[..shift].iter().all(|v| v.to_f32().is_nan()),
        "{what}: wrote before the output"
    );
    for (i, (g, w)) in got[shift..].iter().zip(&want).enumerate() {
        assert_eq!(
            g.to_f32().to_bits(),
            w.to_f32().to_bits(),
            "{what}: token {}, column {}: GPU {} vs CPU {}",
            i / h,
            i % h,
            g.to_f32(),
            w.to_f32()
        );
    }
}

#[test]
fn combine_equals_the_cpu_combine_bit_for_bit() {
    let Some(dev) = device("combine_equals_the_cpu_combine_bit_for_bit") else {
        return;
    };
    let mut rng = common::rng("gpu_combine");
    let shapes = [
        (1usize, 4096usize, 8usize, 2usize, 1usize),
        (7, 2048, 60, 4, 16),
        (1000, 256, 128, 8, 1),
        (4097, 64, 256, 8, 1),
        (33, 1000, 64, 6, 1),
        (5, 7, 8, 1, 4),
        (9, 129, 8, 8, 1),
    ];
    for &(t, h, e, k, block) in &shapes {
        for shift in [0, 1] {
            for shared in [false, true] {
                check::<bf16, f32, bf16>(&dev, &mut rng, t, h, e, k, block, shared, shift);
                check::<bf16, bf16, bf16>(&dev, &mut rng, t, h, e, k, block, shared, shift);
                check::<bf16, f32, f32>(&dev, &mut rng, t, h, e, k, block, shared, shift);
                check::<f16, f32, f16>(&dev, &mut rng, t, h, e, k, block, shared, shift);
                check::<f16, f16, f32>(&dev, &mut rng, t, h, e, k, block, shared, shift);
                check::<f32, f32, f32>(&dev, &mut rng, t, h, e, k, block, shared, shift);
            }
        }
    }
}

#[test]
fn skipped_ids_contribute_nothing() {
    let Some(dev) = device("skipped_ids_contribute_nothing") else {
        return;
    };
    let s = dev.stream();
    let (t, e, k, h) = (3usize, 4usize, 2usize, 16usize);
    // Token 1's second choice is out of range: only its first expert contributes.
    let ids = [0i32, 1, 2, 9, 3, 0];
    let mut perm = GpuPermutation::new(&dev, t, k, e, 1).unwrap();
    let mut status = DeviceStatus::new(&dev).unwrap();
    let ids_dev = s.clone_htod(&ids).unwrap();
    permute(&dev, &ids_dev.as_view(), t, e, 1, &mut perm, &mut status).unwrap();
    assert!(matches!(
        status.check(),
        Err(MoeError::ExpertIdOutOfRange {
            token: 1,
            slot: 1,
            id: 9,
            num_experts: 4
        })
    ));
    let rows = perm.num_rows_bound();
    // Each expert's output row is constant: the expert's index + 1.
    let slot_row = s.clone_dtoh(&perm.slot_row()).unwrap();
    let mut y = vec![0f32; rows * h];
    for (f, &r) in slot_row.iter().enumerate() {
        if r >= 0 {
            y[r as usize * h..(r as usize + 1) * h].fill(ids[f] as f32 + 1.0);
        }
    }
    let y_dev = s.clone_htod(&y).unwrap();
    let w_dev = s
        .clone_htod(&[0.5f32, 0.25, 1.0, 1000.0, 0.5, 0.5])
        .unwrap();
    let mut out = s.clone_htod(&vec![f32::NAN; t * h]).unwrap();
    combine::<f32, f32, f32>(
        &dev,
        &y_dev.as_view(),
        h,
        &perm,
        &w_dev.as_view(),
        None,
        &mut out.as_view_mut(),
    )
    .unwrap();
    let got = s.clone_dtoh(&out).unwrap();
    let want = [0.5 * 1.0 + 0.25 * 2.0, 1.0 * 3.0, 0.5 * 4.0 + 0.5 * 1.0];
    for tok in 0..t {
        assert!(
            got[tok * h..(tok + 1) * h].iter().all(|&v| v == want[tok]),
            "token {tok}"
        );
    }
}

#[test]
fn shared_accumulate_matches_the_oracle() {
    let Some(dev) = device("shared_accumulate_matches_the_oracle") else {
        return;
    };
    let mut rng = common::rng("gpu_shared_accumulate");
    let s = dev.stream();
    for &(t, h) in &[(1usize, 2048usize), (7, 7), (1000, 256), (4097, 64)] {
        let x: Vec<bf16> = values(&mut rng, t * h, 1.0);
        let gate: Vec<bf16> = values(&mut rng, h, 1.0 / (h as f32).sqrt());
        let part0 = common::randn(&mut rng, t * h, 1.0);
        let part1 = common::randn(&mut rng, t * h, 1.0);
        let x_dev = s.clone_htod(&x).unwrap();
        let g_dev = s.clone_htod(&gate).unwrap();
        let p0 = s.clone_htod(&part0).unwrap();
        let p1 = s.clone_htod(&part1).unwrap();
        let mut sum = s.clone_htod(&vec![f32::NAN; t * h]).unwrap();
        // sum = part0 (ungated, overwrite), then += sigmoid(x . gate) * part1.
        shared_expert_accumulate::<bf16>(
            &dev,
            &x_dev.as_view(),
            t,
            h,
            None,
            &p0.as_view(),
            false,
            &mut sum.as_view_mut(),
        )
        .unwrap();
        shared_expert_accumulate(
            &dev,
            &x_dev.as_view(),
            t,
            h,
            Some(&g_dev.as_view()),
            &p1.as_view(),
            true,
            &mut sum.as_view_mut(),
        )
        .unwrap();
        let got = s.clone_dtoh(&sum).unwrap();
        let mut want = vec![0f64; t * h];
        for tok in 0..t {
            let dot: f64 = (0..h)
                .map(|c| x[tok * h + c].to_f64() * gate[c].to_f64())
                .sum();
            let g = 1.0 / (1.0 + (-dot).exp());
            for c in 0..h {
                let i = tok * h + c;
                want[i] = part0[i] as f64 + g * part1[i] as f64;
            }
        }
        common::assert_close(
            &format!("T = {t}, H = {h}"),
            &common::f64s(&got),
            &want,
            1e-5,
        );
    }
}

#[test]
fn bad_input_is_rejected_before_launch() {
    let Some(dev) = device("bad_input_is_rejected_before_launch") else {
        return;
    };
    let s = dev.stream();
    let (t, e, k, h) = (3usize, 4usize, 2usize, 8usize);
    let mut perm = GpuPermutation::new(&dev, t, k, e, 1).unwrap();
    let mut status = DeviceStatus::new(&dev).unwrap();
    let ids = s.clone_htod(&[0i32, 1, 2, 3, 3, 0]).unwrap();
    permute(&dev, &ids.as_view(), t, e, 1, &mut perm, &mut status).unwrap();
    let y = s.clone_htod(&vec![bf16::ONE; t * k * h]).unwrap();
    let w = s.clone_htod(&vec![0.5f32; t * k]).unwrap();
    let sh = s.clone_htod(&vec![f16::ONE; t * h]).unwrap();
    let mut out = s.clone_htod(&vec![bf16::NAN; t * h]).unwrap();
    let shape = |r: Result<(), MoeError>| matches!(r, Err(MoeError::ShapeMismatch { .. }));
    let none = None::<&cudarc::driver::CudaView<'_, f32>>;
    assert!(shape(combine(
        &dev,
        &y.slice(1..),
        h,
        &perm,
        &w.as_view(),
        none,
        &mut out.as_view_mut()
    )));
    assert!(shape(combine(
        &dev,
        &y.as_view(),
        h,
        &perm,
        &w.slice(1..),
        none,
        &mut out.as_view_mut()
    )));
    assert!(shape(combine(
        &dev,
        &y.as_view(),
        h,
        &perm,
        &w.as_view(),
        none,
        &mut out.slice_mut(1..)
    )));
    // A shared output of a third type is not supported (f32 or the expert outputs' type only).
    assert!(matches!(
        combine(
            &dev,
            &y.as_view(),
            h,
            &perm,
            &w.as_view(),
            Some(&sh.as_view()),
            &mut out.as_view_mut()
        ),
        Err(MoeError::Unsupported(_))
    ));
    assert!(s.clone_dtoh(&out).unwrap().iter().all(|v| v.is_nan()));
}

/// Small cases of every combine path and the shared accumulation, for `compute-sanitizer`
/// (scripts/gpu-check.sh runs the `sanitizer_smoke` tests).
#[test]
fn sanitizer_smoke() {
    let Some(dev) = device("sanitizer_smoke") else {
        return;
    };
    let mut rng = common::rng("gpu_combine_sanitizer_smoke");
    for shift in [0, 1] {
        check::<bf16, f32, bf16>(&dev, &mut rng, 3, 64, 8, 2, 1, true, shift);
        check::<f16, f16, f32>(&dev, &mut rng, 2, 24, 4, 3, 4, true, shift);
        check::<f32, f32, f32>(&dev, &mut rng, 2, 9, 4, 1, 1, false, shift);
    }
    let s = dev.stream();
    let (t, h) = (3usize, 40usize);
    let x: Vec<bf16> = values(&mut rng, t * h, 1.0);
    let gate: Vec<bf16> = values(&mut rng, h, 0.2);
    let x_dev = s.clone_htod(&x).unwrap();
    let g_dev = s.clone_htod(&gate).unwrap();
    let part = s.clone_htod(&common::randn(&mut rng, t * h, 1.0)).unwrap();
    let mut sum = s.alloc_zeros::<f32>(t * h).unwrap();
    shared_expert_accumulate(
        &dev,
        &x_dev.as_view(),
        t,
        h,
        Some(&g_dev.as_view()),
        &part.as_view(),
        true,
        &mut sum.as_view_mut(),
    )
    .unwrap();
    assert!(s.clone_dtoh(&sum).unwrap().iter().all(|v| v.is_finite()));
}
