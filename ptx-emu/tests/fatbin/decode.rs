//! Decoding real nvcc 13.0 output (fixtures made by `tests/fixtures/README.md`).

use crate::common::{fixture, fixture_text, normalize_ptx, target_line, FATBINS};
use ptx_emu::fatbin::{
    image_kind, image_len, image_len_checked, parse_fatbin, select_ptx, unwrap_fatbin_wrapper,
    Compression, EntryKind, FatbinEntry, FatbinError, ImageKind, FLAG_ARCH_SPECIFIC,
    FLAG_FAMILY_SPECIFIC, FLAG_ZSTD,
};

fn parse(name: &str) -> Vec<FatbinEntry> {
    parse_fatbin(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// `nvcc -fatbin -arch=compute_80 -code=compute_80 -compress-mode=<mode>`.
#[test]
fn every_compression_mode_decodes_to_the_nvcc_ptx() {
    let stored_text = fixture_text("add_compute_80.cuobjdump.ptx");
    let nvcc_ptx = fixture_text("add_compute_80.ptx");
    for (name, compression) in [
        ("add_80_none.fatbin", Compression::None),
        ("add_80_speed.fatbin", Compression::Lz4),
        ("add_80_size.fatbin", Compression::Zstd),
        ("add_80_default.fatbin", Compression::Zstd),
    ] {
        let entries = parse(name);
        assert_eq!(entries.len(), 1, "{name}");
        let e = &entries[0];
        assert_eq!(e.kind, EntryKind::Ptx, "{name}");
        assert_eq!(e.arch, 80, "{name}");
        assert!(!e.arch_specific && !e.family_specific, "{name}");
        assert_eq!(e.ptx_version, Some((9, 0)), "{name}");
        assert_eq!(e.compression, compression, "{name}");
        assert_eq!(e.offset, 16, "{name}");
        assert_eq!(
            (e.identifier.as_deref(), e.options.as_deref()),
            (None, None)
        );

        // Byte for byte what cuobjdump -xptx extracts from the fatbin.
        let text = e.ptx_text().expect("PTX text");
        assert_eq!(text, stored_text, "{name}");
        // Text, its NUL, and (uncompressed only) zero padding to 8 bytes.
        assert_eq!(e.payload[text.len()], 0, "{name}");
        let expected_len = match compression {
            Compression::None => (text.len() + 1).next_multiple_of(8),
            _ => text.len() + 1,
        };
        assert_eq!(e.payload.len(), expected_len, "{name}");
        // The same program as nvcc -ptx, once comments and spacing are gone.
        assert_eq!(normalize_ptx(text), normalize_ptx(&nvcc_ptx), "{name}");
        assert_eq!(select_ptx(&entries, 80), Ok(text), "{name}");
    }
}

/// The comparison above must not hold trivially.
#[test]
fn ptx_normalization_is_not_vacuous() {
    let stored = fixture_text("add_compute_80.cuobjdump.ptx");
    let nvcc80 = fixture_text("add_compute_80.ptx");
    let nvcc90a = fixture_text("add_compute_90a.ptx");
    assert_ne!(stored, nvcc80);
    assert!(
        normalize_ptx(&nvcc80)
            .iter()
            .filter(|l| !l.is_empty())
            .count()
            > 30
    );
    assert_ne!(normalize_ptx(&nvcc80), normalize_ptx(&nvcc90a));
}

/// `-gencode arch=compute_80,code=[sm_80,compute_80] -gencode arch=compute_90a,code=[sm_90a,compute_90a]`.
#[test]
fn multi_entry_fatbin_lists_kinds_and_archs() {
    let entries = parse("multi_80_90a.fatbin");
    let summary: Vec<_> = entries
        .iter()
        .map(|e| {
            (
                e.kind,
                e.arch,
                e.arch_specific,
                e.compression,
                e.ptx_version,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            (EntryKind::Elf, 80, false, Compression::None, None),
            (EntryKind::Ptx, 80, false, Compression::Zstd, Some((9, 0))),
            (EntryKind::Elf, 90, true, Compression::None, None),
            (EntryKind::Ptx, 90, true, Compression::Zstd, Some((9, 0))),
        ]
    );
    assert_eq!(
        entries.iter().map(|e| e.offset).collect::<Vec<_>>(),
        [0x10, 0xd78, 0xf50, 0x1e98]
    );
    for e in entries.iter().filter(|e| e.kind == EntryKind::Elf) {
        assert_eq!(image_kind(&e.payload), ImageKind::Elf);
        assert_eq!(image_len_checked(&e.payload), Some(e.payload.len()));
        assert_eq!(e.ptx_text(), None);
    }
    let ptx80 = entries[1].ptx_text().unwrap();
    let ptx90a = entries[3].ptx_text().unwrap();
    assert_eq!(target_line(ptx80), ".target sm_80");
    assert_eq!(target_line(ptx90a), ".target sm_90a");
    assert_eq!(
        normalize_ptx(ptx80),
        normalize_ptx(&fixture_text("add_compute_80.ptx"))
    );
    assert_eq!(
        normalize_ptx(ptx90a),
        normalize_ptx(&fixture_text("add_compute_90a.ptx"))
    );

    assert_eq!(select_ptx(&entries, 80), Ok(ptx80));
    assert_eq!(select_ptx(&entries, 86), Ok(ptx80));
    assert_eq!(select_ptx(&entries, 89), Ok(ptx80));
    assert_eq!(select_ptx(&entries, 90), Ok(ptx90a));
    // compute_90a is for sm_90 only.
    assert_eq!(select_ptx(&entries, 100), Ok(ptx80));
    assert_eq!(
        select_ptx(&entries, 75),
        Err(FatbinError::NoCompatiblePtx {
            sm: 75,
            available: "compute_80, compute_90a".to_owned()
        })
    );
}

/// `compute_100a`, `compute_100f` and `[sm_120,compute_120]`; the sm_120 ELF
/// has the 112-byte entry header of sm_100+ cubins.
#[test]
fn arch_and_family_specific_targets() {
    let entries = parse("family_100a_100f_120.fatbin");
    let summary: Vec<_> = entries
        .iter()
        .map(|e| (e.kind, e.arch, e.arch_specific, e.family_specific))
        .collect();
    assert_eq!(
        summary,
        [
            (EntryKind::Ptx, 100, true, false),
            (EntryKind::Ptx, 100, false, true),
            (EntryKind::Elf, 120, false, false),
            (EntryKind::Ptx, 120, false, false),
        ]
    );
    assert_eq!(entries[0].flags & FLAG_ARCH_SPECIFIC, FLAG_ARCH_SPECIFIC);
    assert_eq!(
        entries[1].flags & FLAG_FAMILY_SPECIFIC,
        FLAG_FAMILY_SPECIFIC
    );
    // The flags agree with each PTX's own .target line.
    for e in entries.iter().filter(|e| e.kind == EntryKind::Ptx) {
        let suffix = match (e.arch_specific, e.family_specific) {
            (true, _) => "a",
            (_, true) => "f",
            _ => "",
        };
        let want = format!(".target sm_{}{suffix}", e.arch);
        assert_eq!(target_line(e.ptx_text().unwrap()), want);
        let nvcc = fixture_text(&format!("add_compute_{}{suffix}.ptx", e.arch));
        assert_eq!(normalize_ptx(e.ptx_text().unwrap()), normalize_ptx(&nvcc));
    }
    // The ELF's options locator points at binary data; it is not reported.
    assert_eq!(entries[2].options, None);
    assert_eq!(
        image_len_checked(&entries[2].payload),
        Some(entries[2].payload.len())
    );

    let text = |i: usize| entries[i].ptx_text().unwrap();
    assert_eq!(select_ptx(&entries, 100), Ok(text(0)));
    assert_eq!(select_ptx(&entries, 103), Ok(text(1)));
    assert_eq!(select_ptx(&entries, 120), Ok(text(3)));
    assert_eq!(select_ptx(&entries, 121), Ok(text(3)));
    for sm in [80, 90, 110] {
        assert!(
            matches!(
                select_ptx(&entries, sm),
                Err(FatbinError::NoCompatiblePtx { .. })
            ),
            "sm {sm}"
        );
    }
}

/// `-lineinfo -compress-mode=none`: a 104-byte entry header holding the
/// identifier and the ptxas options.
#[test]
fn lineinfo_entry_has_identifier_and_options() {
    let entries = parse("add_80_lineinfo.fatbin");
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    assert_eq!(e.identifier.as_deref(), Some("k.cu"));
    assert_eq!(e.options.as_deref(), Some("--generate-line-info"));
    assert_eq!(e.compression, Compression::None);
    let text = e.ptx_text().unwrap();
    assert_eq!(target_line(text), ".target sm_80");
    assert!(text.contains(".loc"), "line info is present");
    assert_eq!(select_ptx(&entries, 80), Ok(text));
}

/// `-Xfatbin -compress-all` compresses the cubin too; it must decode to the
/// same bytes as the uncompressed cubin in the multi-entry fixture.
#[test]
fn compressed_cubins_match_the_uncompressed_one() {
    let reference = &parse("multi_80_90a.fatbin")[0];
    assert_eq!(reference.compression, Compression::None);
    for (name, compression) in [
        ("elf_zstd.fatbin", Compression::Zstd),
        ("elf_lz4.fatbin", Compression::Lz4),
    ] {
        let entries = parse(name);
        assert_eq!(entries.len(), 2, "{name}");
        assert_eq!(entries[0].kind, EntryKind::Elf, "{name}");
        assert_eq!(entries[0].compression, compression, "{name}");
        assert_eq!(entries[0].payload, reference.payload, "{name}");
        assert_eq!(
            entries[1].ptx_text(),
            Some(fixture_text("add_compute_80.cuobjdump.ptx").as_str())
        );
    }
}

/// LTO IR entries: raw with `-compress-mode=none`, and kept as stored when
/// compressed (their compressed form is not plain zstd or LZ4).
#[test]
fn lto_ir_entries() {
    let raw = parse("lto_80_none.fatbin");
    assert_eq!(raw.len(), 1);
    assert_eq!(raw[0].kind, EntryKind::LtoIr);
    assert_eq!(raw[0].compression, Compression::None);
    assert_eq!(&raw[0].payload[..4], &[0xed, 0x43, 0x4e, 0x7f]);
    assert_eq!(
        raw[0].options.as_deref(),
        Some("-ftz=0 -prec_div=1 -prec_sqrt=1 -fmad=1")
    );
    assert_eq!(raw[0].ptx_version, None);
    assert!(select_ptx(&raw, 80).is_err());

    // nvcc -dc -dlto -arch=sm_80 -fatbin
    let both = parse("ptx_and_lto_80.fatbin");
    assert_eq!(both.len(), 2);
    assert_eq!(both[0].kind, EntryKind::Ptx);
    assert_eq!(both[0].options.as_deref(), Some("--compile-only"));
    assert_eq!(both[1].kind, EntryKind::LtoIr);
    assert_eq!(both[1].compression, Compression::Opaque);
    assert_eq!(both[1].flags & FLAG_ZSTD, FLAG_ZSTD);
    assert_eq!(both[1].payload.len(), 0x72f);
    assert_eq!(
        select_ptx(&both, 86),
        Ok(fixture_text("add_compute_80.cuobjdump.ptx").as_str())
    );
}

/// The `.nv_fatbin` section of `ld -r` of two nvcc objects: two containers
/// back to back.
#[test]
fn concatenated_containers() {
    let image = fixture("two_containers.nv_fatbin");
    let entries = parse_fatbin(&image).unwrap();
    let summary: Vec<_> = entries.iter().map(|e| (e.offset, e.kind, e.arch)).collect();
    assert_eq!(
        summary,
        [
            (0x10, EntryKind::Elf, 80),
            (0xd78, EntryKind::Ptx, 80),
            (0xf60, EntryKind::Ptx, 90)
        ]
    );
    let first_len = image_len_checked(&image).unwrap();
    assert_eq!(first_len, 0xf50);
    assert_eq!(unsafe { image_len(image.as_ptr()) }, Some(first_len));
    assert_eq!(parse_fatbin(&image[..first_len]).unwrap(), entries[..2]);
    let second = parse_fatbin(&image[first_len..]).unwrap();
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].payload, entries[2].payload);
    let sub2 = entries[2].ptx_text().unwrap();
    assert!(sub2.contains(".entry sub2("));
    assert_eq!(select_ptx(&entries, 90), Ok(sub2));
    assert_eq!(select_ptx(&entries, 86), Ok(entries[1].ptx_text().unwrap()));

    // Zero padding after a container is skipped.
    let mut padded = image.clone();
    padded.extend_from_slice(&[0; 24]);
    assert_eq!(parse_fatbin(&padded).unwrap(), entries);
}

#[test]
fn image_kind_and_length_of_each_fixture() {
    for name in FATBINS {
        let image = fixture(name);
        assert_eq!(image_kind(&image), ImageKind::Fatbin, "{name}");
        let len = image_len_checked(&image).unwrap();
        assert_eq!(unsafe { image_len(image.as_ptr()) }, Some(len), "{name}");
        if *name != "two_containers.nv_fatbin" {
            assert_eq!(len, image.len(), "{name}");
        }
        for e in parse(name) {
            if e.kind == EntryKind::Elf {
                assert_eq!(image_kind(&e.payload), ImageKind::Elf);
                let n = unsafe { image_len(e.payload.as_ptr()) };
                assert_eq!(n, Some(e.payload.len()), "{name}");
            }
            if let Some(text) = e.ptx_text() {
                assert_eq!(image_kind(&e.payload), ImageKind::PtxText);
                assert_eq!(unsafe { image_len(e.payload.as_ptr()) }, Some(text.len()));
                assert_eq!(image_len_checked(&e.payload), Some(text.len()));
            }
        }
    }
}

#[test]
fn image_kind_edge_cases() {
    assert_eq!(image_kind(b""), ImageKind::Unknown);
    assert_eq!(image_kind(b"\0"), ImageKind::Unknown);
    assert_eq!(image_kind(b"\0\0\0\0"), ImageKind::Unknown);
    assert_eq!(image_kind(b".v\0"), ImageKind::PtxText);
    assert_eq!(image_kind(b"//\n.version 9.0"), ImageKind::PtxText);
    assert_eq!(image_kind(b"\x7fELF"), ImageKind::Elf);
    assert_eq!(image_kind(b"\x7fEL"), ImageKind::Unknown);
    assert_eq!(
        image_kind(&0x4662_43b1u32.to_le_bytes()),
        ImageKind::FatbinWrapper
    );
    assert_eq!(image_kind(&[0xff, 0xfe, 0x41, 0x42]), ImageKind::Unknown);

    // A short string is not over-read: the NUL ends it before four bytes.
    let short = *b"a\0";
    assert_eq!(unsafe { image_len(short.as_ptr()) }, Some(1));
    let empty = *b"\0";
    assert_eq!(unsafe { image_len(empty.as_ptr()) }, None);
    assert_eq!(
        image_len_checked(b".version 9.0"),
        None,
        "no NUL in the slice"
    );
    assert_eq!(image_len_checked(b".version 9.0\0rest"), Some(12));
    assert_eq!(image_len_checked(b"\xff\xfe\x00"), None);

    // A fatbin header claiming more than the slice has.
    let image = fixture("add_80_none.fatbin");
    assert_eq!(image_len_checked(&image[..image.len() - 1]), None);
    assert_eq!(image_len_checked(&image[..10]), None);
}

#[test]
fn fatbin_wrapper_is_unwrapped() {
    let image = fixture("multi_80_90a.fatbin");
    // __fatBinC_Wrapper_t { int magic; int version; const unsigned long long *data; void *filename_or_fatbins; }
    #[repr(C)]
    struct Wrapper {
        magic: u32,
        version: u32,
        data: *const u8,
        filename_or_fatbins: *const u8,
    }
    let wrapper = Wrapper {
        magic: 0x4662_43b1,
        version: 1,
        data: image.as_ptr(),
        filename_or_fatbins: std::ptr::null(),
    };
    let ptr = (&raw const wrapper).cast::<u8>();
    let head = unsafe { std::slice::from_raw_parts(ptr, 8) };
    assert_eq!(image_kind(head), ImageKind::FatbinWrapper);
    assert_eq!(unsafe { image_len(ptr) }, None);
    let data = unsafe { unwrap_fatbin_wrapper(ptr) };
    assert_eq!(data, image.as_ptr());
    assert_eq!(unsafe { image_len(data) }, Some(image.len()));
    // Anything else comes back unchanged.
    assert_eq!(
        unsafe { unwrap_fatbin_wrapper(image.as_ptr()) },
        image.as_ptr()
    );
    let _ = (wrapper.version, wrapper.filename_or_fatbins);
}

fn ptx_entry(arch: u32, arch_specific: bool, family_specific: bool, text: &str) -> FatbinEntry {
    let mut payload = text.as_bytes().to_vec();
    payload.push(0);
    FatbinEntry {
        offset: 0,
        kind: EntryKind::Ptx,
        arch,
        arch_specific,
        family_specific,
        ptx_version: Some((9, 0)),
        compression: Compression::None,
        flags: 0x11,
        identifier: None,
        options: None,
        payload,
    }
}

#[test]
fn select_ptx_rules() {
    let entries = [
        ptx_entry(90, false, false, "plain90"),
        ptx_entry(90, true, false, "arch90a"),
        ptx_entry(100, false, true, "family100f"),
        ptx_entry(75, false, false, "plain75"),
    ];
    assert_eq!(select_ptx(&entries, 75), Ok("plain75"));
    assert_eq!(select_ptx(&entries, 89), Ok("plain75"));
    assert_eq!(
        select_ptx(&entries, 90),
        Ok("arch90a"),
        "specific beats plain"
    );
    assert_eq!(select_ptx(&entries, 100), Ok("family100f"));
    assert_eq!(select_ptx(&entries, 103), Ok("family100f"));
    assert_eq!(select_ptx(&entries, 120), Ok("plain90"), "other family");
    assert_eq!(
        select_ptx(&entries, 70),
        Err(FatbinError::NoCompatiblePtx {
            sm: 70,
            available: "compute_90, compute_90a, compute_100f, compute_75".to_owned()
        })
    );
    assert_eq!(
        select_ptx(&[], 80),
        Err(FatbinError::NoCompatiblePtx {
            sm: 80,
            available: String::new()
        })
    );
    let mut bad = ptx_entry(80, false, false, "");
    bad.payload = vec![b'.', 0xff, 0xfe, 0];
    bad.offset = 0x40;
    let err = select_ptx(std::slice::from_ref(&bad), 80).unwrap_err();
    assert_eq!(
        err,
        FatbinError::InvalidPtxText {
            offset: 0x40,
            target: "compute_80".to_owned()
        }
    );
    assert!(err.to_string().contains("offset 64"), "{err}");
    // ELF entries are never chosen.
    let mut elf = ptx_entry(80, false, false, "elf");
    elf.kind = EntryKind::Elf;
    assert!(select_ptx(&[elf], 80).is_err());
}
