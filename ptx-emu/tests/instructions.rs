//! One test per instruction family, on hand-written PTX, with the expected values worked out by
//! hand from the PTX ISA (not from the emulator's code): mma fragments, ldmatrix with and without
//! .trans, every shfl mode with clamp and segment mask, cp.async zero-fill and group accounting,
//! cvt rounding on the boundary cases, atomics, vote, match and redux.

mod common;

use common::*;
use ptx_emu::Check;

const HEADER: &str = ".version 8.0\n.target sm_80\n.address_size 64\n";

/// A kernel `k(out, in)` whose body `body` sees `%rd_out`, `%rd_in` (global addresses), `%r_t`
/// (thread index) and `%r_l` (lane), with scratch registers %r<64>, %rd<32>, %f<32>, %p<16>, %rs<16>.
fn kernel(body: &str) -> String {
    format!(
        "{HEADER}.visible .entry k(.param .u64 out, .param .u64 in)\n{{\n\
         .reg .b32 %r<64>; .reg .b64 %rd<32>; .reg .f32 %f<32>; .reg .pred %p<16>; .reg .b16 %rs<16>;\n\
         .reg .b32 %r_t, %r_l; .reg .b64 %rd_out, %rd_in;\n\
         ld.param.u64 %rd_out, [out]; ld.param.u64 %rd_in, [in];\n\
         cvta.to.global.u64 %rd_out, %rd_out; cvta.to.global.u64 %rd_in, %rd_in;\n\
         mov.u32 %r_t, %tid.x; mov.u32 %r_l, %laneid;\n{body}\nret;\n}}\n"
    )
}

/// Run `kernel(body)` on one block of `threads`, with `input` (u32) and `out_words` u32 outputs.
fn run(body: &str, threads: u32, input: &[u32], out_words: usize) -> Vec<u32> {
    let e = emu();
    let inp = upload(&e, if input.is_empty() { &[0u32] } else { input });
    let out = alloc::<u32>(&e, out_words);
    e.memory()
        .write(out, &vec![0u8; out_words * 4])
        .expect("zero the output");
    launch(
        &e,
        &kernel(body),
        "k",
        1,
        threads,
        &[Arg::U64(out), Arg::U64(inp)],
    )
    .unwrap_or_else(|err| panic!("{err}"));
    download::<u32>(&e, out, out_words)
}

/// `st.global.u32 [out + 4 * (t * stride + slot)], reg`
fn store(reg: &str, stride: u32, slot: u32) -> String {
    format!(
        "mad.lo.u32 %r60, %r_t, {stride}, {slot}; mul.wide.u32 %rd30, %r60, 4; add.s64 %rd31, %rd_out, %rd30; st.global.u32 [%rd31], {reg};\n"
    )
}

// ---------------------------------------------------------------------------------------------
// shfl.sync
// ---------------------------------------------------------------------------------------------

/// Each lane holds 100 + lane; the shuffle result and its predicate are stored.
fn shfl(mode: &str, b: u32, c: u32) -> Vec<(u32, u32)> {
    let body = format!(
        "add.u32 %r1, %r_l, 100;\nshfl.sync.{mode}.b32 %r2|%p1, %r1, {b}, {c}, -1;\nselp.u32 %r3, 1, 0, %p1;\n{}{}",
        store("%r2", 2, 0),
        store("%r3", 2, 1)
    );
    let out = run(&body, 32, &[], 64);
    (0..32).map(|l| (out[2 * l], out[2 * l + 1])).collect()
}

#[test]
fn shfl_up_down_bfly_idx_without_segments() {
    // __shfl_up_sync(v, 3): c = 0. Lanes 0..2 have no source: own value, predicate false.
    for (l, (v, p)) in shfl("up", 3, 0).into_iter().enumerate() {
        if l >= 3 {
            assert_eq!((v, p), (100 + l as u32 - 3, 1), "up lane {l}");
        } else {
            assert_eq!((v, p), (100 + l as u32, 0), "up lane {l}");
        }
    }
    // __shfl_down_sync(v, 5): c = 0x1f (clamp at lane 31).
    for (l, (v, p)) in shfl("down", 5, 0x1f).into_iter().enumerate() {
        if l + 5 <= 31 {
            assert_eq!((v, p), (100 + l as u32 + 5, 1), "down lane {l}");
        } else {
            assert_eq!((v, p), (100 + l as u32, 0), "down lane {l}");
        }
    }
    // __shfl_xor_sync(v, 6): c = 0x1f: every partner exists.
    for (l, (v, p)) in shfl("bfly", 6, 0x1f).into_iter().enumerate() {
        assert_eq!((v, p), (100 + (l as u32 ^ 6), 1), "bfly lane {l}");
    }
    // __shfl_sync(v, 13): c = 0x1f: everyone reads lane 13.
    for (l, (v, p)) in shfl("idx", 13, 0x1f).into_iter().enumerate() {
        assert_eq!((v, p), (113, 1), "idx lane {l}");
    }
}

#[test]
fn shfl_with_segments_of_eight_and_a_clamp() {
    // width 8: segmask = 32 - 8 = 0x18 in c[12:8].
    // __shfl_up_sync(v, 2, 8): c = 0x1800. Within each segment, lanes 0,1 keep their own value.
    for (l, (v, p)) in shfl("up", 2, 0x1800).into_iter().enumerate() {
        let want = if l % 8 >= 2 {
            (100 + l as u32 - 2, 1)
        } else {
            (100 + l as u32, 0)
        };
        assert_eq!((v, p), want, "segmented up lane {l}");
    }
    // __shfl_down_sync(v, 3, 8): c = 0x181f. Lanes 5..7 of each segment keep their own value.
    for (l, (v, p)) in shfl("down", 3, 0x181f).into_iter().enumerate() {
        let want = if l % 8 + 3 <= 7 {
            (100 + l as u32 + 3, 1)
        } else {
            (100 + l as u32, 0)
        };
        assert_eq!((v, p), want, "segmented down lane {l}");
    }
    // __shfl_sync(v, 11, 8): c = 0x181f; source lane 11 % 8 = 3 of the own segment.
    for (l, (v, p)) in shfl("idx", 11, 0x181f).into_iter().enumerate() {
        assert_eq!(
            (v, p),
            (100 + (l as u32 & !7) + 3, 1),
            "segmented idx lane {l}"
        );
    }
    // __shfl_xor_sync(v, 4, 8): c = 0x181f; the partner stays within the segment.
    for (l, (v, p)) in shfl("bfly", 4, 0x181f).into_iter().enumerate() {
        assert_eq!((v, p), (100 + (l as u32 ^ 4), 1), "segmented bfly lane {l}");
    }
    // A clamp below the segment end: idx with c = 0x0004 (no segments, clamp 4): lanes asking
    // for lane 9 > 4 get their own value, predicate false.
    for (l, (v, p)) in shfl("idx", 9, 0x0004).into_iter().enumerate() {
        assert_eq!((v, p), (100 + l as u32, 0), "clamped idx lane {l}");
    }
    // bfly 1 with clamp 15: lanes whose partner is above 15 keep their own value.
    for (l, (v, p)) in shfl("bfly", 1, 0x000f).into_iter().enumerate() {
        let j = l as u32 ^ 1;
        let want = if j <= 15 {
            (100 + j, 1)
        } else {
            (100 + l as u32, 0)
        };
        assert_eq!((v, p), want, "clamped bfly lane {l}");
    }
}

#[test]
fn shfl_outside_its_member_mask_is_a_synccheck_finding() {
    // Lane 20 executes a shuffle whose mask holds lanes 0..15 only.
    let body = "shfl.sync.idx.b32 %r2, %r_l, 0, 0x1f, 0xffff;\n".to_string() + &store("%r2", 1, 0);
    let e = emu();
    let out = alloc::<u32>(&e, 32);
    let f = expect_finding(
        launch(
            &e,
            &kernel(&body),
            "k",
            1,
            32,
            &[Arg::U64(out), Arg::U64(out)],
        ),
        Check::Synccheck,
    );
    assert!(f.what.contains("invalid member mask"), "{f}");
}

// ---------------------------------------------------------------------------------------------
// vote, match, redux
// ---------------------------------------------------------------------------------------------

#[test]
fn vote_match_and_redux_over_the_warp() {
    // Lane l: predicate (l % 3 == 0); value l / 8 (four groups of eight).
    let body = "rem.u32 %r1, %r_l, 3; setp.eq.u32 %p1, %r1, 0;\n\
        vote.sync.ballot.b32 %r2, %p1, -1;\n\
        vote.sync.any.pred %p2, %p1, -1; selp.u32 %r3, 1, 0, %p2;\n\
        vote.sync.all.pred %p3, %p1, -1; selp.u32 %r4, 1, 0, %p3;\n\
        vote.sync.uni.pred %p4, %p1, -1; selp.u32 %r5, 1, 0, %p4;\n\
        shr.u32 %r6, %r_l, 3;\n\
        match.any.sync.b32 %r7, %r6, -1;\n\
        match.all.sync.b32 %r8|%p5, %r6, -1; selp.u32 %r9, 1, 0, %p5;\n\
        redux.sync.add.u32 %r10, %r_l, -1;\n\
        redux.sync.max.s32 %r11, %r6, -1;\n\
        redux.sync.or.b32 %r12, %r_l, -1;\n"
        .to_string()
        + &(0..11)
            .map(|i| {
                store(
                    &format!("%r{}", [2, 3, 4, 5, 7, 8, 9, 10, 11, 12, 6][i]),
                    11,
                    i as u32,
                )
            })
            .collect::<String>();
    let out = run(&body, 32, &[], 32 * 11);
    let ballot: u32 = (0..32).filter(|l| l % 3 == 0).map(|l| 1u32 << l).sum();
    for l in 0..32usize {
        let o = &out[l * 11..l * 11 + 11];
        assert_eq!(o[0], ballot, "ballot");
        assert_eq!(o[1], 1, "any");
        assert_eq!(o[2], 0, "all");
        assert_eq!(o[3], 0, "uni");
        assert_eq!(o[4], 0xffu32 << (8 * (l / 8)), "match.any lane {l}");
        assert_eq!((o[5], o[6]), (0, 0), "match.all: values differ");
        assert_eq!(o[7], 496, "redux.add: 0 + 1 + ... + 31");
        assert_eq!(o[8], 3, "redux.max");
        assert_eq!(o[9], 31, "redux.or");
    }
}

// ---------------------------------------------------------------------------------------------
// cvt
// ---------------------------------------------------------------------------------------------

/// Convert each input f32 (bits) with `cvt.{op}` and store the result bits.
fn cvt(op: &str, dst: &str, inputs: &[u32]) -> Vec<u32> {
    let body = format!(
        "mul.wide.u32 %rd1, %r_t, 4; add.s64 %rd2, %rd_in, %rd1; ld.global.f32 %f1, [%rd2];\n\
         cvt.{op} {dst}, %f1;\n{}",
        if dst == "%rs1" {
            "cvt.u32.u16 %r1, %rs1;\n".to_string() + &store("%r1", 1, 0)
        } else {
            store(dst, 1, 0)
        }
    );
    run(&body, inputs.len() as u32, inputs, inputs.len())
}

#[test]
fn cvt_to_bf16_and_f16_on_the_boundaries() {
    // f32 bits and the bf16 each rounding gives: ties go to even with .rn, .rz truncates.
    let cases: [(u32, u32, u32); 9] = [
        (0x3f80_0000, 0x3f80, 0x3f80), // 1.0 exact
        (0x3f80_8000, 0x3f80, 0x3f80), // tie, even below
        (0x3f81_8000, 0x3f82, 0x3f81), // tie, even above
        (0x3f80_8001, 0x3f81, 0x3f80), // just above the tie
        (0x7f7f_ffff, 0x7f80, 0x7f7f), // max f32: rounds up to inf; rz keeps the max finite
        (0xff80_0000, 0xff80, 0xff80), // -inf
        (0x7fc1_2345, 0x7fff, 0x7fff), // NaN: the canonical bf16 NaN
        (0x0000_0001, 0x0000, 0x0000), // the smallest subnormal rounds to +0
        (0x8040_0000, 0x8040, 0x8040), // a subnormal bf16 that is exact
    ];
    let inputs: Vec<u32> = cases.iter().map(|c| c.0).collect();
    let rn = cvt("rn.bf16.f32", "%rs1", &inputs);
    let rz = cvt("rz.bf16.f32", "%rs1", &inputs);
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(rn[i], c.1, "cvt.rn.bf16.f32 {:#x}", c.0);
        assert_eq!(rz[i], c.2, "cvt.rz.bf16.f32 {:#x}", c.0);
    }
    // f16: 65504 is the max; 65520 is the tie to inf; 2^-24 the smallest subnormal.
    let cases: [(f32, u32); 7] = [
        (65504.0, 0x7bff),
        (65519.0, 0x7bff),
        (65520.0, 0x7c00),
        (5.960_464_5e-8, 0x0001),
        (2.980_232_2e-8, 0x0000), // exactly half the smallest subnormal: tie to even (0)
        (-0.0, 0x8000),
        (1.000_488_3, 0x3c00), // 1 + 2^-11: the tie between 1 and 1 + 2^-10 goes to even 1
    ];
    let inputs: Vec<u32> = cases.iter().map(|c| c.0.to_bits()).collect();
    let rn = cvt("rn.f16.f32", "%rs1", &inputs);
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(rn[i], c.1, "cvt.rn.f16.f32 {}", c.0);
    }
    // .sat clamps to [0, 1]; NaN gives +0.
    let inputs = [
        2.5f32.to_bits(),
        (-3.0f32).to_bits(),
        0x7fc0_0000,
        0.25f32.to_bits(),
    ];
    let sat = cvt("rn.sat.f16.f32", "%rs1", &inputs);
    assert_eq!(sat, vec![0x3c00, 0x0000, 0x0000, 0x3400]);
}

#[test]
fn cvt_float_to_integer_rounds_then_saturates() {
    let inputs: Vec<u32> = [2.5f32, -2.5, 3.5, -0.5, 3.0e9, -3.0e9, f32::NAN, 7.999]
        .iter()
        .map(|f| f.to_bits())
        .collect();
    let rni = cvt("rni.s32.f32", "%r1", &inputs);
    let rzi = cvt("rzi.s32.f32", "%r1", &inputs);
    let rmi = cvt("rmi.s32.f32", "%r1", &inputs);
    let as_i = |v: &[u32]| v.iter().map(|x| *x as i32).collect::<Vec<_>>();
    assert_eq!(as_i(&rni), vec![2, -2, 4, 0, i32::MAX, i32::MIN, 0, 8]);
    assert_eq!(as_i(&rzi), vec![2, -2, 3, 0, i32::MAX, i32::MIN, 0, 7]);
    assert_eq!(as_i(&rmi), vec![2, -3, 3, -1, i32::MAX, i32::MIN, 0, 7]);
    let rnu = cvt("rni.u32.f32", "%r1", &inputs);
    assert_eq!(rnu, vec![2, 0, 4, 0, 3_000_000_000, 0, 0, 8]);
}

// ---------------------------------------------------------------------------------------------
// Atomics
// ---------------------------------------------------------------------------------------------

#[test]
fn atomics_on_one_word_from_every_lane() {
    // Word 0..9 of `in` are the targets; every lane applies one operation with operand lane + 1.
    let init: [u32; 10] = [
        10,
        1000,
        0,
        0xffff_0000,
        0,
        0x0f0f,
        5,
        7,
        100,
        3.0f32.to_bits(),
    ];
    let body = "add.u32 %r1, %r_l, 1;\n\
        atom.global.add.u32 %r2, [%rd_in], %r1;\n\
        atom.global.min.u32 %r3, [%rd_in+4], %r1;\n\
        atom.global.max.s32 %r4, [%rd_in+8], %r1;\n\
        atom.global.and.b32 %r5, [%rd_in+12], -1;\n\
        atom.global.or.b32 %r6, [%rd_in+16], %r1;\n\
        atom.global.xor.b32 %r7, [%rd_in+20], 1;\n\
        atom.global.inc.u32 %r8, [%rd_in+24], 9;\n\
        atom.global.dec.u32 %r9, [%rd_in+28], 9;\n\
        atom.global.cas.b32 %r10, [%rd_in+32], 100, %r1;\n\
        cvt.rn.f32.u32 %f1, %r1; atom.global.add.f32 %f2, [%rd_in+36], %f1;\n"
        .to_string()
        + &store("%r10", 1, 0);
    let e = emu();
    let inp = upload(&e, &init);
    let out = alloc::<u32>(&e, 32);
    launch(
        &e,
        &kernel(&body),
        "k",
        1,
        32,
        &[Arg::U64(out), Arg::U64(inp)],
    )
    .expect("atomics");
    let w = download::<u32>(&e, inp, 10);
    assert_eq!(w[0], 10 + (1..=32).sum::<u32>(), "add");
    assert_eq!(w[1], 1, "min");
    assert_eq!(w[2], 32, "max");
    assert_eq!(w[3], 0xffff_0000, "and with all ones");
    assert_eq!(w[4], 63, "or of 1..=32");
    assert_eq!(w[5], 0x0f0f, "xor 1, an even number of times");
    // inc with bound 9 from 5, 32 times: ((old >= 9) ? 0 : old + 1) cycles through 0..=9.
    assert_eq!(w[6], (5 + 32) % 10, "inc wraps at its bound");
    // dec with bound 9 from 7: ((old == 0 || old > 9) ? 9 : old - 1), 32 times.
    assert_eq!(w[7], (7 + 10 * 4 - 32) % 10, "dec wraps at zero");
    // cas(100 -> lane + 1): only the first lane in order finds 100.
    let cas_old = download::<u32>(&e, out, 32);
    assert_eq!(
        cas_old.iter().filter(|&&o| o == 100).count(),
        1,
        "exactly one cas succeeds"
    );
    assert!((1..=32).contains(&w[8]), "the winner's value");
    assert_eq!(
        f32::from_bits(w[9]),
        3.0 + 528.0,
        "f32 add of 1..=32 (exact)"
    );
}

// ---------------------------------------------------------------------------------------------
// ldmatrix and mma
// ---------------------------------------------------------------------------------------------

/// Shared tile of four 8x8 b16 matrices, element (m, r, c) = m * 64 + r * 8 + c + 1; lane l gives
/// the address of row l % 8 of matrix l / 8; the four result registers are stored.
fn ldmatrix(trans: bool) -> Vec<u32> {
    let tr = if trans { ".trans" } else { "" };
    let body = format!(
        ".shared .align 16 .b8 tile[512];\n\
         // fill: thread t writes elements 8t .. 8t+7, element e holding e + 1\n\
         mov.u32 %r20, tile;\n\
         shl.b32 %r21, %r_t, 3;\n\
         mov.u32 %r22, 0;\n\
         $fill:\n\
         add.u32 %r23, %r21, %r22; add.u32 %r24, %r23, 1; cvt.u16.u32 %rs1, %r24;\n\
         shl.b32 %r25, %r23, 1; add.u32 %r26, %r20, %r25; st.shared.u16 [%r26], %rs1;\n\
         add.u32 %r22, %r22, 1; setp.lt.u32 %p1, %r22, 8; @%p1 bra $fill;\n\
         bar.sync 0;\n\
         // row address: matrix l / 8, row l % 8: byte offset (l / 8) * 128 + (l % 8) * 16\n\
         shl.b32 %r27, %r_l, 4; add.u32 %r28, %r20, %r27;\n\
         ldmatrix.sync.aligned.m8n8.x4{tr}.shared.b16 {{%r1, %r2, %r3, %r4}}, [%r28];\n{}{}{}{}",
        store("%r1", 4, 0),
        store("%r2", 4, 1),
        store("%r3", 4, 2),
        store("%r4", 4, 3)
    );
    run(&body, 32, &[], 128)
}

#[test]
fn ldmatrix_x4_with_and_without_trans() {
    let elem = |m: u32, r: u32, c: u32| m * 64 + r * 8 + c + 1;
    let plain = ldmatrix(false);
    let trans = ldmatrix(true);
    for l in 0..32u32 {
        for m in 0..4u32 {
            // Without .trans: lane l holds row l / 4, columns 2 (l % 4) and 2 (l % 4) + 1.
            let (r, c) = (l / 4, 2 * (l % 4));
            let want = elem(m, r, c) | (elem(m, r, c + 1) << 16);
            assert_eq!(
                plain[(l * 4 + m) as usize],
                want,
                "ldmatrix lane {l} matrix {m}"
            );
            // With .trans: lane l holds column l / 4, rows 2 (l % 4) and 2 (l % 4) + 1.
            let (c, r) = (l / 4, 2 * (l % 4));
            let want = elem(m, r, c) | (elem(m, r + 1, c) << 16);
            assert_eq!(
                trans[(l * 4 + m) as usize],
                want,
                "ldmatrix.trans lane {l} matrix {m}"
            );
        }
    }
}

/// bf16 bits of small integers (exact in bf16 and in every product and sum here).
fn bf16(v: i32) -> u32 {
    ((v as f32).to_bits() >> 16) & 0xffff
}

#[test]
fn mma_m16n8k16_bf16_fragments() {
    // A[i][k] = i - k, B[k][j] = (k + 2j) % 5 - 2, C[i][j] = i * j.
    let a = |i: i32, k: i32| i - k;
    let b = |k: i32, j: i32| (k + 2 * j) % 5 - 2;
    let c = |i: i32, j: i32| i * j;
    // Fragments per the ISA (g = lane / 4, t = lane % 4): A reg r = {A[g + 8 (r % 2)][2t + 8 (r / 2)],
    // the next column}; B reg r = {B[2t + 8r][g], B[2t + 8r + 1][g]}; C reg r = C[g + 8 (r / 2)][2t + r % 2].
    let mut input = Vec::new();
    for l in 0..32i32 {
        let (g, t) = (l / 4, l % 4);
        for r in 0..4 {
            let (i, k) = (g + 8 * (r % 2), 2 * t + 8 * (r / 2));
            input.push(bf16(a(i, k)) | (bf16(a(i, k + 1)) << 16));
        }
        for r in 0..2 {
            let k = 2 * t + 8 * r;
            input.push(bf16(b(k, g)) | (bf16(b(k + 1, g)) << 16));
        }
        input.extend([0, 0]); // C starts 16-byte aligned
        for r in 0..4 {
            input.push((c(g + 8 * (r / 2), 2 * t + r % 2) as f32).to_bits());
        }
    }
    let body = "mul.lo.u32 %r40, %r_t, 48; cvt.u64.u32 %rd1, %r40; add.s64 %rd2, %rd_in, %rd1;\n\
        ld.global.v4.u32 {%r1, %r2, %r3, %r4}, [%rd2];\n\
        ld.global.v2.u32 {%r5, %r6}, [%rd2+16];\n\
        ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd2+32];\n\
        mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%f5, %f6, %f7, %f8}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};\n\
        mov.b32 %r7, %f5; mov.b32 %r8, %f6; mov.b32 %r9, %f7; mov.b32 %r10, %f8;\n"
        .to_string()
        + &store("%r7", 4, 0)
        + &store("%r8", 4, 1)
        + &store("%r9", 4, 2)
        + &store("%r10", 4, 3);
    let out = run(&body, 32, &input, 128);
    for l in 0..32i32 {
        let (g, t) = (l / 4, l % 4);
        for r in 0..4 {
            let (i, j) = (g + 8 * (r / 2), 2 * t + r % 2);
            let want = c(i, j) + (0..16).map(|k| a(i, k) * b(k, j)).sum::<i32>();
            assert_eq!(
                f32::from_bits(out[(l * 4 + r) as usize]),
                want as f32,
                "D[{i}][{j}] from lane {l} register {r}"
            );
        }
    }
}

/// Kernels for sm_89+ instructions (FP8): the same body as [`kernel`] under `.target sm_90a`.
fn kernel_sm90a(body: &str) -> String {
    kernel(body).replacen(".target sm_80", ".target sm_90a", 1)
}

/// Run `kernel_sm90a(body)` as [`run`] does.
fn run_sm90a(body: &str, threads: u32, input: &[u32], out_words: usize) -> Vec<u32> {
    let e = emu();
    let inp = upload(&e, input);
    let out = alloc::<u32>(&e, out_words);
    e.memory()
        .write(out, &vec![0u8; out_words * 4])
        .expect("zero the output");
    launch(
        &e,
        &kernel_sm90a(body),
        "k",
        1,
        threads,
        &[Arg::U64(out), Arg::U64(inp)],
    )
    .unwrap_or_else(|err| panic!("{err}"));
    download::<u32>(&e, out, out_words)
}

#[test]
fn cvt_rn_satfinite_e4m3x2_f32_rounds_saturates_and_packs() {
    // (a, b) -> the 16-bit result: e4m3(a) in the upper byte, e4m3(b) in the lower (PTX ISA, cvt).
    // e4m3 codes by hand: sign, 4 exponent bits (bias 7), 3 fraction bits; 448 = 0x7e is the max.
    let cases: [(f32, f32, u32); 10] = [
        (1.0, 0.0, 0x3800),
        (448.0, -448.0, 0x7efe),
        (464.0, 1.0e6, 0x7e7e), // the tie past 448 and a huge value both saturate to 448
        (f32::INFINITY, f32::NEG_INFINITY, 0x7efe), // .satfinite: infinities to +-448
        (f32::NAN, -0.0, 0x7f80), // NaN -> 0x7f; -0 keeps its sign
        (1.0625, 1.1875, 0x383a), // ties to even: 1 + 1/16 -> 1 (m = 0), 1.1875 -> 1.25 (m = 2)
        (1.968_75, 240.0, 0x4077), // carry into the next binade: 2.0; 240 = 1.875 * 2^7
        (0.001_953_125, 0.000_976_562_5, 0x0100), // 2^-9: the smallest subnormal; 2^-10 ties to 0
        (0.002_929_687_5, -0.015_625, 0x0288), // 3 * 2^-10 ties to even 2 * 2^-9; -2^-6 = 0x88
        (0.017_578_125, 3.0, 0x0944), // 1.125 * 2^-6 (normal, m = 1); 3 = 1.5 * 2
    ];
    let mut input = Vec::new();
    for c in &cases {
        input.extend([c.0.to_bits(), c.1.to_bits()]);
    }
    let body = "mul.wide.u32 %rd1, %r_t, 8; add.s64 %rd2, %rd_in, %rd1;\n\
        ld.global.f32 %f1, [%rd2]; ld.global.f32 %f2, [%rd2+4];\n\
        cvt.rn.satfinite.e4m3x2.f32 %rs1, %f1, %f2;\n\
        cvt.u32.u16 %r1, %rs1;\n"
        .to_string()
        + &store("%r1", 1, 0);
    let out = run_sm90a(&body, cases.len() as u32, &input, cases.len());
    for (i, c) in cases.iter().enumerate() {
        assert_eq!(
            out[i], c.2,
            "cvt e4m3x2 of ({}, {}): {:#06x}",
            c.0, c.1, out[i]
        );
    }
}

/// The e4m3 code of a small value, written out from the format (not from the emulator's code).
fn e4m3(v: i32) -> u32 {
    let magnitude = match v.abs() {
        0 => 0x00,
        1 => 0x38, // 1.0 * 2^0
        2 => 0x40, // 1.0 * 2^1
        3 => 0x44, // 1.5 * 2^1
        4 => 0x48, // 1.0 * 2^2
        other => panic!("no code written for {other}"),
    };
    if v < 0 {
        magnitude | 0x80
    } else {
        magnitude
    }
}

#[test]
fn mma_m16n8k32_e4m3_fragments() {
    // A[i][k] = (i + 3k) % 9 - 4, B[k][j] = (2k + j) % 7 - 3, C[i][j] = i - j: every product is
    // exact, so the sums are exact integers.
    let a = |i: i32, k: i32| (i + 3 * k) % 9 - 4;
    let b = |k: i32, j: i32| (2 * k + j) % 7 - 3;
    let c = |i: i32, j: i32| i - j;
    // Fragments per the ISA (g = lane / 4, t = lane % 4), four codes per register, the lowest
    // byte first: A reg r = A[g + 8 (r % 2)][4t + 16 (r / 2) + 0..4]; B reg r = B[4t + 16r + 0..4][g];
    // C reg r = C[g + 8 (r / 2)][2t + r % 2].
    let pack = |v: [i32; 4]| {
        v.iter()
            .enumerate()
            .fold(0u32, |w, (i, &x)| w | (e4m3(x) << (8 * i)))
    };
    let mut input = Vec::new();
    for l in 0..32i32 {
        let (g, t) = (l / 4, l % 4);
        for r in 0..4 {
            let (i, k) = (g + 8 * (r % 2), 4 * t + 16 * (r / 2));
            input.push(pack([a(i, k), a(i, k + 1), a(i, k + 2), a(i, k + 3)]));
        }
        for r in 0..2 {
            let k = 4 * t + 16 * r;
            input.push(pack([b(k, g), b(k + 1, g), b(k + 2, g), b(k + 3, g)]));
        }
        input.extend([0, 0]); // C starts 16-byte aligned
        for r in 0..4 {
            input.push((c(g + 8 * (r / 2), 2 * t + r % 2) as f32).to_bits());
        }
    }
    let body = "mul.lo.u32 %r40, %r_t, 48; cvt.u64.u32 %rd1, %r40; add.s64 %rd2, %rd_in, %rd1;\n\
        ld.global.v4.u32 {%r1, %r2, %r3, %r4}, [%rd2];\n\
        ld.global.v2.u32 {%r5, %r6}, [%rd2+16];\n\
        ld.global.v4.f32 {%f1, %f2, %f3, %f4}, [%rd2+32];\n\
        mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%f5, %f6, %f7, %f8}, {%r1, %r2, %r3, %r4}, {%r5, %r6}, {%f1, %f2, %f3, %f4};\n\
        mov.b32 %r7, %f5; mov.b32 %r8, %f6; mov.b32 %r9, %f7; mov.b32 %r10, %f8;\n"
        .to_string()
        + &store("%r7", 4, 0)
        + &store("%r8", 4, 1)
        + &store("%r9", 4, 2)
        + &store("%r10", 4, 3);
    let out = run_sm90a(&body, 32, &input, 128);
    for l in 0..32i32 {
        let (g, t) = (l / 4, l % 4);
        for r in 0..4 {
            let (i, j) = (g + 8 * (r / 2), 2 * t + r % 2);
            let want = c(i, j) + (0..32).map(|k| a(i, k) * b(k, j)).sum::<i32>();
            assert_eq!(
                f32::from_bits(out[(l * 4 + r) as usize]),
                want as f32,
                "D[{i}][{j}] from lane {l} register {r}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// cp.async
// ---------------------------------------------------------------------------------------------

/// Thread t copies 16 bytes of `in` (words 4t..4t+3) to shared with source size `src_size`, in
/// three commit groups (threads 0..10, 11..21, 22..31 issue in groups 0, 1, 2), waits with
/// `wait`, synchronises, then reads back its own 16 bytes.
fn cp_async_body(src_size: &str, wait: u32, read_group: u32) -> String {
    format!(
        ".shared .align 16 .b8 buf[512];\n\
         mov.u32 %r20, buf; shl.b32 %r21, %r_t, 4; add.u32 %r22, %r20, %r21;\n\
         cvt.u64.u32 %rd1, %r21; add.s64 %rd2, %rd_in, %rd1;\n\
         setp.lt.u32 %p1, %r_t, 11; setp.lt.u32 %p2, %r_t, 22; setp.ge.u32 %p3, %r_t, 11;\n\
         and.pred %p4, %p2, %p3;\n\
         @%p1 cp.async.cg.shared.global [%r22], [%rd2], 16, {src_size};\n\
         cp.async.commit_group;\n\
         @%p4 cp.async.cg.shared.global [%r22], [%rd2], 16, {src_size};\n\
         cp.async.commit_group;\n\
         @!%p2 cp.async.cg.shared.global [%r22], [%rd2], 16, {src_size};\n\
         cp.async.commit_group;\n\
         cp.async.wait_group {wait};\n\
         bar.sync 0;\n\
         // read the chunk of thread 11 * group (a thread of group `read_group`)\n\
         mov.u32 %r30, {read_first}; shl.b32 %r31, %r30, 4; add.u32 %r32, %r20, %r31;\n\
         ld.shared.v4.u32 {{%r1, %r2, %r3, %r4}}, [%r32];\n{}{}{}{}",
        store("%r1", 4, 0),
        store("%r2", 4, 1),
        store("%r3", 4, 2),
        store("%r4", 4, 3),
        read_first = 11 * read_group,
    )
}

#[test]
fn cp_async_zero_fill_and_group_accounting() {
    let input: Vec<u32> = (0..128u32).map(|i| 0xa000_0000 + i).collect();
    // Source size 6: bytes 0..5 copied, 6..15 zero. Waiting for everything (wait_group 0), thread
    // 22's chunk (group 2) is complete.
    let e = emu();
    let inp = upload(&e, &input);
    let out = alloc::<u32>(&e, 128);
    launch(
        &e,
        &kernel(&cp_async_body("6", 0, 2)),
        "k",
        1,
        32,
        &[Arg::U64(out), Arg::U64(inp)],
    )
    .expect("complete copies");
    let got = download::<u32>(&e, out, 4);
    // Thread 22's chunk: words 88..91 of the input; 6 bytes kept: word 88 and the low half of 89.
    assert_eq!(got, vec![input[88], input[89] & 0xffff, 0, 0]);
    // wait_group 1 completes groups 0 and 1; group 0's chunk (thread 0) can be read.
    let out2 = alloc::<u32>(&e, 128);
    launch(
        &e,
        &kernel(&cp_async_body("16", 1, 0)),
        "k",
        1,
        32,
        &[Arg::U64(out2), Arg::U64(inp)],
    )
    .expect("groups 0 and 1 are complete");
    assert_eq!(download::<u32>(&e, out2, 4), input[0..4].to_vec());
    // ... but group 2 may still be in flight: reading thread 22's chunk is a finding.
    let out3 = alloc::<u32>(&e, 128);
    let f = expect_finding(
        launch(
            &e,
            &kernel(&cp_async_body("16", 1, 2)),
            "k",
            1,
            32,
            &[Arg::U64(out3), Arg::U64(inp)],
        ),
        Check::Racecheck,
    );
    assert!(f.what.contains("before its wait"), "{f}");
    // Source size 0 reads nothing: the source may even be out of bounds... it is not read.
    let out4 = alloc::<u32>(&e, 128);
    launch(
        &e,
        &kernel(&cp_async_body("0", 0, 1)),
        "k",
        1,
        32,
        &[Arg::U64(out4), Arg::U64(inp)],
    )
    .expect("zero-fill");
    assert_eq!(download::<u32>(&e, out4, 4), vec![0, 0, 0, 0]);
}

// ---------------------------------------------------------------------------------------------
// Barriers and unknown instructions
// ---------------------------------------------------------------------------------------------

#[test]
fn a_barrier_in_divergent_code_is_a_synccheck_finding() {
    // Warp 0 waits at one barrier, warp 1 at another.
    let body = "setp.lt.u32 %p1, %r_t, 32; @%p1 bra $a;\nbar.sync 0;\nbra $end;\n$a:\nbar.sync 0;\n$end:\n";
    let e = emu();
    let out = alloc::<u32>(&e, 64);
    let f = expect_finding(
        launch(
            &e,
            &kernel(body),
            "k",
            1,
            64,
            &[Arg::U64(out), Arg::U64(out)],
        ),
        Check::Synccheck,
    );
    assert!(f.what.contains("divergent barrier"), "{f}");
}

#[test]
fn an_unknown_instruction_is_an_error_naming_its_line() {
    let e = emu();
    let err = e
        .load_ptx(&kernel("frobnicate.u32 %r1, %r2;"))
        .err()
        .expect("an unknown instruction is refused");
    assert!(err.message.contains("line 11"), "{}", err.message);
    assert!(err.message.contains("frobnicate"), "{}", err.message);
    let err = e
        .load_ptx(&kernel("add.weird.u32 %r1, %r2, %r3;"))
        .err()
        .expect("an unknown modifier is refused");
    assert!(err.message.contains(".weird"), "{}", err.message);
}

/// Inline asm as CUDA's fp16 headers write it (candle's kernels have it): a `{ }` block declaring its
/// own registers, with the state space and type as one word (`.reg.b32`), and a second block
/// reusing a name. f16 0x3c00 is 1.0, f32 1.0 is 0x3f800000.
#[test]
fn inline_asm_blocks_declare_their_own_registers() {
    let body = format!(
        "{{.reg.b32 f, C;\n .reg.b16 h;\n mov.b16 h, 0x3c00;\n cvt.f32.f16 f, h;\n mov.b32 C, f;\n{}}}\n\
         {{.reg .b32 f;\n mov.b32 f, 7;\n{}}}\n",
        store("C", 2, 0),
        store("f", 2, 1)
    );
    assert_eq!(run(&body, 1, &[], 2), [0x3f80_0000, 7]);
}
