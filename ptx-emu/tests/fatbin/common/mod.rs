//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::PathBuf;

/// Reads `tests/fixtures/<name>`.
pub fn fixture(name: &str) -> Vec<u8> {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", name]
        .iter()
        .collect();
    std::fs::read(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// Reads a text fixture.
pub fn fixture_text(name: &str) -> String {
    String::from_utf8(fixture(name)).expect("fixture is UTF-8")
}

/// The fatbin fixtures, each a single container unless noted by the name.
pub const FATBINS: &[&str] = &[
    "add_80_none.fatbin",
    "add_80_speed.fatbin",
    "add_80_size.fatbin",
    "add_80_default.fatbin",
    "add_80_lineinfo.fatbin",
    "multi_80_90a.fatbin",
    "elf_zstd.fatbin",
    "elf_lz4.fatbin",
    "family_100a_100f_120.fatbin",
    "ptx_and_lto_80.fatbin",
    "lto_80_none.fatbin",
    "two_containers.nv_fatbin",
];

/// nvcc stores PTX compacted: comments dropped and whitespace runs squeezed,
/// line breaks kept. This maps both that and `nvcc -ptx` output to the same
/// lines: each line without its `//` comment, its words joined by one space.
pub fn normalize_ptx(ptx: &str) -> Vec<String> {
    ptx.split('\n')
        .map(|line| {
            let code = line.split("//").next().unwrap_or("");
            code.split_whitespace().collect::<Vec<_>>().join(" ")
        })
        .collect()
}

/// The `.target` line of a PTX text.
pub fn target_line(ptx: &str) -> &str {
    ptx.lines()
        .map(str::trim)
        .find(|l| l.starts_with(".target"))
        .expect("PTX has a .target line")
}
