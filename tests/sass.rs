//! Static checks of the compiled kernels' machine code (SASS), the part of "is this kernel fast" that
//! can be verified without a GPU: each embedded fatbin is disassembled with `cuobjdump -sass` and
//! searched for the instructions its design depends on.
//!
//! - `grouped_gemm`: every kernel uses tensor cores (`HMMA.16816.F32.BF16` for bf16 inputs,
//!   `HMMA.16816.F32` for f16), ldmatrix (`LDSM`), and, on the aligned path, cp.async (`LDGSTS`);
//!   none touches local memory (`LDL`/`STL`). The quantized-weight kernels (FP8, MXFP4) store each
//!   dequantised chunk with one 16-byte shared store (`STS.128`, which the 16-bit aligned kernels
//!   never need). The FP8 aligned path never loads a code by itself (`LDG.E.U8`, which its generic
//!   path does); the MXFP4 aligned path loads a chunk's 8 codes with one 32-bit load (`LDG.E`; its
//!   byte loads are the e8m0 scales), which its generic path, reading a byte at a time, never has.
//! - `w8a8_gemm` (FP8 x FP8, built for sm_89 and sm_90a only): on sm_89 every GEMM kernel runs the
//!   native FP8 tensor-core instruction `QMMA.16832.F32.E4M3.E4M3` and the quantisation kernels
//!   `F2FP.SATFINITE.E4M3.F32.PACK_AB_MERGE_C`. sm_90a has no FP8 `mma.sync` (Hopper's FP8 tensor
//!   cores are reached through `wgmma` only): ptxas unpacks the codes to f16
//!   (`F2FP.F16.E4M3.UNPACK_B`) and runs `HMMA.16816.F32`; the test pins that lowering, so a ptxas
//!   that changes it is noticed (and perf/NOTES.md revisited).
//! - `permute` and `combine`: 128-bit global loads (`LDG.E.128`, which cuobjdump 13 prints with an
//!   optional `.CONSTANT` suffix for read-only loads).
//!
//! cuobjdump comes from `$CUOBJDUMP` (scripts/install-cuda-toolchain.sh --with-cuobjdump installs it;
//! CI exports the variable). Without it the tests print `SKIPPED sass::<test>: ...` and pass, except
//! under CI (`CI` set), where a missing cuobjdump is a failure. A kernel family missing from the
//! build always fails, naming the family.

use std::io::Write;
use std::path::PathBuf;
use std::process::Command;

/// The architectures every fatbin carries SASS for (build.rs).
const ARCHES: [&str; 2] = ["sm_80", "sm_90a"];

/// cuobjdump, or `None` after printing why the test is skipped.
fn cuobjdump(test: &str) -> Option<PathBuf> {
    match std::env::var_os("CUOBJDUMP").filter(|v| !v.is_empty()) {
        Some(path) => Some(PathBuf::from(path)),
        None => {
            let msg = "CUOBJDUMP is not set (install it with \
                       scripts/install-cuda-toolchain.sh --with-cuobjdump and export CUOBJDUMP)";
            if std::env::var_os("CI").is_some() {
                panic!("{msg}; CI must check the kernels' SASS");
            }
            // Straight to the stderr handle so that the harness does not capture the skip notice.
            let _ = writeln!(std::io::stderr(), "SKIPPED sass::{test}: {msg}");
            None
        }
    }
}

/// One kernel function's disassembly.
struct Function {
    name: String,
    sass: String,
}

/// Disassemble kernel family `family` for `arch`, split into its functions.
fn disassemble(cuobjdump: &PathBuf, family: &str, arch: &str) -> Vec<Function> {
    let families = moe_kernels::gpu::embedded_fatbins();
    let Some((_, image)) = families.iter().find(|(name, _)| *name == family) else {
        let built: Vec<&str> = families.iter().map(|(name, _)| *name).collect();
        panic!(
            "kernel family `{family}` not built: kernels/{family}.cu is not in this build \
             (built families: {built:?}; a build without nvcc has none)"
        );
    };
    let dir = std::env::temp_dir().join(format!("moe-kernels-sass-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("create a temporary folder");
    let path = dir.join(format!("{family}.fatbin"));
    std::fs::write(&path, image).expect("write the fatbin");
    let output = Command::new(cuobjdump)
        .args(["-sass", "-arch", arch])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", cuobjdump.display()));
    let _ = std::fs::remove_file(&path);
    assert!(
        output.status.success(),
        "cuobjdump -sass -arch {arch} failed on the `{family}` fatbin: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8_lossy(&output.stdout);
    let mut functions: Vec<Function> = Vec::new();
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("Function : ") {
            functions.push(Function {
                name: name.trim().to_string(),
                sass: String::new(),
            });
        } else if let Some(f) = functions.last_mut() {
            f.sass.push_str(line);
            f.sass.push('\n');
        }
    }
    assert!(
        !functions.is_empty(),
        "cuobjdump found no {arch} functions in the `{family}` fatbin"
    );
    functions
}

/// The mnemonics of the instructions in `sass`: on each line
/// `/*0090*/  @!P0 LDG.E.128 R4, [R2.64] ;  /* 0x... */`, the first word after the address and the
/// optional predicate guard.
fn mnemonics(sass: &str) -> impl Iterator<Item = &str> {
    sass.lines().filter_map(|line| {
        let (_, instruction) = line.trim_start().strip_prefix("/*")?.split_once("*/")?;
        let mut words = instruction.split_whitespace();
        let word = words.next()?;
        let word = if word.starts_with('@') {
            words.next()?
        } else {
            word
        };
        (!word.starts_with("/*")).then(|| word.trim_end_matches(';'))
    })
}

/// Whether `sass` has an instruction whose mnemonic is exactly `mnemonic`.
fn has_instruction(sass: &str, mnemonic: &str) -> bool {
    mnemonics(sass).any(|m| m == mnemonic)
}

/// Whether `sass` has an instruction whose mnemonic starts with `prefix`.
fn has_instruction_prefix(sass: &str, prefix: &str) -> bool {
    mnemonics(sass).any(|m| m.starts_with(prefix))
}

#[test]
fn grouped_gemm_uses_tensor_cores_ldmatrix_and_cp_async() {
    let Some(cuobjdump) = cuobjdump("grouped_gemm_uses_tensor_cores_ldmatrix_and_cp_async") else {
        return;
    };
    for arch in ARCHES {
        let functions = disassemble(&cuobjdump, "grouped_gemm", arch);
        assert_eq!(
            functions.len(),
            48,
            "{arch}: 4 tiles x 4 type pairs x 3 weight formats, found {:?}",
            functions.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        for f in &functions {
            let what = format!("{} on {arch}", f.name);
            let mma = if f.name.contains("_bf16_") {
                "HMMA.16816.F32.BF16"
            } else {
                "HMMA.16816.F32"
            };
            assert!(has_instruction(&f.sass, mma), "{what}: no {mma}");
            assert!(
                has_instruction_prefix(&f.sass, "LDSM.16.M88.4"),
                "{what}: no ldmatrix.x4 (LDSM.16.M88.4)"
            );
            if !f.name.contains("_generic_") {
                assert!(
                    has_instruction_prefix(&f.sass, "LDGSTS.E.BYPASS.128"),
                    "{what}: no 16-byte cp.async.cg (LDGSTS.E.BYPASS.128)"
                );
                assert_eq!(
                    has_instruction(&f.sass, "STS.128"),
                    f.name.contains("_e4m3_") || f.name.contains("_mxfp4_"),
                    "{what}: 16-byte shared stores (STS.128) are the quantized loaders', and only \
                     theirs"
                );
            }
            if f.name.contains("_e4m3_") {
                assert_eq!(
                    has_instruction_prefix(&f.sass, "LDG.E.U8"),
                    f.name.contains("_generic_"),
                    "{what}: byte loads of codes (LDG.E.U8) belong to the generic path only"
                );
            }
            if f.name.contains("_mxfp4_medium_") || f.name.contains("_medium_mxfp4_") {
                // The medium tile and the generic kernel share the tile and the epilogue (whose
                // bias loads are 32-bit loads too): only the aligned loader's code loads add
                // 32-bit loads.
                let generic = f.name.replace("_medium_", "_generic_");
                let twin = functions
                    .iter()
                    .find(|g| g.name == generic)
                    .unwrap_or_else(|| panic!("{what}: no {generic}"));
                let loads = |sass: &str| mnemonics(sass).filter(|&m| m == "LDG.E").count();
                assert!(
                    loads(&f.sass) > loads(&twin.sass),
                    "{what}: one 32-bit load of 8 codes (LDG.E) per chunk on the aligned path, \
                     byte loads on the generic path ({} against {})",
                    loads(&f.sass),
                    loads(&twin.sass)
                );
            }
            for local in ["LDL", "STL"] {
                assert!(
                    !has_instruction_prefix(&f.sass, local),
                    "{what}: local memory access ({local})"
                );
            }
        }
    }
}

/// Every function of `family` on sm_80 together: at least one 128-bit global load.
#[test]
fn w8a8_gemm_uses_fp8_tensor_cores_on_sm_89_and_f16_ones_on_sm_90a() {
    let Some(cuobjdump) =
        cuobjdump("w8a8_gemm_uses_fp8_tensor_cores_on_sm_89_and_f16_ones_on_sm_90a")
    else {
        return;
    };
    for arch in ["sm_89", "sm_90a"] {
        let functions = disassemble(&cuobjdump, "w8a8_gemm", arch);
        assert_eq!(
            functions.len(),
            8,
            "{arch}: 2 quantisation and 2 loaders x 3 outputs GEMM kernels, found {:?}",
            functions.iter().map(|f| &f.name).collect::<Vec<_>>()
        );
        for f in &functions {
            let what = format!("{} on {arch}", f.name);
            if f.name.starts_with("moe_fp8_quant_") {
                assert!(
                    has_instruction(&f.sass, "F2FP.SATFINITE.E4M3.F32.PACK_AB_MERGE_C"),
                    "{what}: no e4m3x2 conversion"
                );
                continue;
            }
            let (mma, absent) = if arch == "sm_89" {
                ("QMMA.16832.F32.E4M3.E4M3", "HMMA.16816.F32")
            } else {
                ("HMMA.16816.F32", "QMMA.16832.F32.E4M3.E4M3")
            };
            assert!(has_instruction(&f.sass, mma), "{what}: no {mma}");
            assert!(!has_instruction(&f.sass, absent), "{what}: {absent}");
            if arch == "sm_90a" {
                assert!(
                    has_instruction(&f.sass, "F2FP.F16.E4M3.UNPACK_B"),
                    "{what}: no e4m3 -> f16 unpacking"
                );
            }
            assert!(
                has_instruction_prefix(&f.sass, "LDSM.16.M88.4"),
                "{what}: no ldmatrix.x4 (LDSM.16.M88.4)"
            );
            if !f.name.contains("_generic_") {
                assert!(
                    has_instruction_prefix(&f.sass, "LDGSTS.E.BYPASS.128"),
                    "{what}: no 16-byte cp.async.cg (LDGSTS.E.BYPASS.128)"
                );
            }
            for local in ["LDL", "STL"] {
                assert!(
                    !has_instruction_prefix(&f.sass, local),
                    "{what}: local memory access ({local})"
                );
            }
        }
    }
}

fn check_vector_loads(test: &str, family: &str) {
    let Some(cuobjdump) = cuobjdump(test) else {
        return;
    };
    let functions = disassemble(&cuobjdump, family, "sm_80");
    let vectorised: Vec<&str> = functions
        .iter()
        .filter(|f| has_instruction_prefix(&f.sass, "LDG.E.128"))
        .map(|f| f.name.as_str())
        .collect();
    assert!(
        !vectorised.is_empty(),
        "no function of `{family}` uses 128-bit global loads (LDG.E.128) on sm_80; functions: {:?}",
        functions.iter().map(|f| &f.name).collect::<Vec<_>>()
    );
}

#[test]
fn permute_uses_128_bit_loads() {
    check_vector_loads("permute_uses_128_bit_loads", "permute");
}

#[test]
fn combine_uses_128_bit_loads() {
    check_vector_loads("combine_uses_128_bit_loads", "combine");
}

#[test]
fn instruction_matching() {
    let sass = concat!(
        "        /*0090*/      LDG.E.128.CONSTANT R8, [R2.64] ;  /* 0x0000000402087981 */\n",
        "        /*00a0*/ @!P0 HMMA.16816.F32 R4, R8, R10, R4 ;  /* 0x000000280804723c */\n",
        "                                                           /* 0x000fe20000000f00 */\n",
        "        .section .text.x\n",
    );
    assert!(has_instruction_prefix(sass, "LDG.E.128"));
    assert!(has_instruction(sass, "HMMA.16816.F32"));
    assert!(!has_instruction(sass, "HMMA.16816.F32.BF16"));
    assert!(!has_instruction_prefix(sass, "STL"));
    assert_eq!(mnemonics(sass).count(), 2);
}
