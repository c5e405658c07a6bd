//! Malformed images: every one must give a typed error, never a panic.

use crate::common::{fixture, FATBINS};
use ptx_emu::fatbin::{
    image_kind, image_len_checked, parse_fatbin, select_ptx, Compression, FatbinError, FLAG_LZ4,
    FLAG_OPAQUE, FLAG_ZSTD,
};
use std::panic::{catch_unwind, AssertUnwindSafe};

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}
fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// Entry offsets of a single-container fixture.
fn entry_offsets(image: &[u8]) -> Vec<usize> {
    parse_fatbin(image)
        .unwrap()
        .iter()
        .map(|e| e.offset)
        .collect()
}

/// Exercises everything on an image; panics only if the library does.
fn exercise(image: &[u8]) -> Result<usize, FatbinError> {
    let _ = image_kind(image);
    let _ = image_len_checked(image);
    let entries = parse_fatbin(image)?;
    for e in &entries {
        let _ = e.ptx_text();
        let _ = image_len_checked(&e.payload);
    }
    for sm in [0, 75, 80, 86, 90, 100, 103, 120, u32::MAX] {
        let _ = select_ptx(&entries, sm);
    }
    Ok(entries.len())
}

#[test]
fn every_truncation_is_an_error() {
    for name in FATBINS {
        let image = fixture(name);
        let first_len = image_len_checked(&image).unwrap();
        for len in 0..image.len() {
            let result = exercise(&image[..len]);
            match len {
                0 => assert_eq!(result, Err(FatbinError::EmptyImage)),
                1..16 => assert!(
                    matches!(result, Err(FatbinError::TruncatedHeader { offset: 0, available }) if available == len),
                    "{name} at {len}: {result:?}"
                ),
                // A prefix holding exactly the first of two containers.
                _ if len == first_len => assert_eq!(result.map(|_| ()), Ok(()), "{name}"),
                _ => assert!(
                    matches!(
                        result,
                        Err(FatbinError::ContainerPastEnd { .. }
                            | FatbinError::TruncatedHeader { .. })
                    ),
                    "{name} at {len}: {result:?}"
                ),
            }
        }
    }
}

/// Truncations the container header agrees with, so that they hit the
/// entry-level checks.
#[test]
fn every_truncation_inside_a_consistent_container_is_an_error() {
    for name in FATBINS.iter().filter(|n| !n.contains("two_containers")) {
        let image = fixture(name);
        let mut boundaries = entry_offsets(&image);
        boundaries.push(image.len());
        for len in 16..image.len() {
            let mut cut = image[..len].to_vec();
            put_u64(&mut cut, 8, (len - 16) as u64);
            let result = exercise(&cut);
            if boundaries.contains(&len) {
                let complete = boundaries.iter().position(|&b| b == len).unwrap();
                assert_eq!(result, Ok(complete), "{name} at {len}");
            } else {
                assert!(
                    matches!(
                        result,
                        Err(FatbinError::TruncatedEntryHeader { .. }
                            | FatbinError::BadEntryHeaderSize { .. }
                            | FatbinError::PayloadPastEnd { .. })
                    ),
                    "{name} at {len}: {result:?}"
                );
            }
        }
    }
}

#[test]
fn container_header_corruption() {
    let image = fixture("add_80_size.fatbin");
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = image.clone();
        f(&mut b);
        parse_fatbin(&b)
    };
    assert_eq!(
        with(&|b| put_u32(b, 0, 0x1234_5678)),
        Err(FatbinError::BadMagic {
            offset: 0,
            found: 0x1234_5678
        })
    );
    assert_eq!(
        with(&|b| put_u16(b, 4, 2)),
        Err(FatbinError::UnsupportedVersion {
            offset: 0,
            version: 2
        })
    );
    for hs in [0, 1, 8, 15] {
        assert_eq!(
            with(&|b| put_u16(b, 6, hs)),
            Err(FatbinError::BadHeaderSize {
                offset: 0,
                header_size: hs
            })
        );
    }
    // A larger header size moves the entries and the end.
    assert!(matches!(
        with(&|b| put_u16(b, 6, 24)),
        Err(FatbinError::ContainerPastEnd { .. })
    ));
    assert!(matches!(
        with(&|b| put_u16(b, 6, u16::MAX)),
        Err(FatbinError::ContainerPastEnd { .. })
    ));
    for size in [
        image.len() as u64 - 15,
        u64::MAX,
        u64::MAX - 15,
        1 << 63,
        usize::MAX as u64,
    ] {
        let err = with(&|b| put_u64(b, 8, size)).unwrap_err();
        assert!(
            matches!(err, FatbinError::ContainerPastEnd { entries_size, .. } if entries_size == size),
            "{err}"
        );
    }
    // Shrinking the declared size leaves trailing bytes that are not a fatbin.
    let shrunk = get_u64(&image, 8) - 8;
    let err = with(&|b| put_u64(b, 8, shrunk)).unwrap_err();
    assert!(
        matches!(
            err,
            FatbinError::PayloadPastEnd { .. } | FatbinError::BadMagic { .. }
        ),
        "{err}"
    );
    let msg = with(&|b| put_u64(b, 8, 4096)).unwrap_err().to_string();
    assert!(msg.contains("4096") && msg.contains("464"), "{msg}");
}

#[test]
fn entry_header_corruption() {
    let image = fixture("add_80_lineinfo.fatbin");
    let e = 16; // the only entry
    let with = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = image.clone();
        f(&mut b);
        parse_fatbin(&b)
    };
    for hs in [0, 1, 63, 2000, u32::MAX] {
        assert!(
            matches!(
                with(&|b| put_u32(b, e + 4, hs)),
                Err(FatbinError::BadEntryHeaderSize { offset: 16, header_size, .. }) if header_size == hs
            ),
            "header size {hs}"
        );
    }
    // A header size that fits but points the payload elsewhere.
    assert!(matches!(
        with(&|b| put_u32(b, e + 4, 200)),
        Err(FatbinError::PayloadPastEnd { .. })
    ));
    let psize = get_u64(&image, e + 8);
    for ps in [psize + 1, psize + 8, u64::MAX, 1 << 40] {
        let err = with(&|b| put_u64(b, e + 8, ps)).unwrap_err();
        assert!(
            matches!(err, FatbinError::PayloadPastEnd { offset: 16, payload_offset: 120, payload_size, .. } if payload_size == ps),
            "{err}"
        );
    }
    // Identifier (offset 32, length 36) and options locator (offset 20).
    let field_err = |f: &dyn Fn(&mut Vec<u8>)| match with(f) {
        Err(FatbinError::FieldOutOfBounds { field, .. }) => field,
        other => panic!("{other:?}"),
    };
    assert_eq!(field_err(&|b| put_u32(b, e + 36, 1000)), "identifier");
    assert_eq!(field_err(&|b| put_u32(b, e + 36, u32::MAX)), "identifier");
    assert_eq!(field_err(&|b| put_u32(b, e + 32, u32::MAX)), "identifier");
    assert_eq!(field_err(&|b| put_u32(b, e + 32, 101)), "identifier");
    assert_eq!(field_err(&|b| put_u32(b, e + 20, 100)), "options locator");
    assert_eq!(
        field_err(&|b| put_u32(b, e + 20, u32::MAX)),
        "options locator"
    );
    // The locator at header offset 72 holds (80, 22): the options string.
    assert_eq!(get_u32(&image, e + 72), 80);
    assert_eq!(field_err(&|b| put_u32(b, e + 76, 25)), "options");
    assert_eq!(field_err(&|b| put_u32(b, e + 72, u32::MAX)), "options");
    // A zero length means no string, whatever the offset.
    let entries = with(&|b| {
        put_u32(b, e + 76, 0);
        put_u32(b, e + 72, u32::MAX);
    })
    .unwrap();
    assert_eq!(entries[0].options, None);
    let entries = with(&|b| {
        put_u32(b, e + 36, 0);
        put_u32(b, e + 32, u32::MAX);
    })
    .unwrap();
    assert_eq!(entries[0].identifier, None);
    assert_eq!(entries[0].options.as_deref(), Some("--generate-line-info"));
}

#[test]
fn compressed_payload_corruption() {
    for (name, codec) in [
        ("add_80_size.fatbin", Compression::Zstd),
        ("add_80_speed.fatbin", Compression::Lz4),
    ] {
        let image = fixture(name);
        let e = 16;
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut b = image.clone();
            f(&mut b);
            parse_fatbin(&b)
        };
        let csize = get_u32(&image, e + 16);
        let dsize = get_u64(&image, e + 56);
        let psize = get_u64(&image, e + 8);
        assert!(with(&|_| {}).is_ok());

        for c in [psize as u32 + 1, u32::MAX] {
            assert_eq!(
                with(&|b| put_u32(b, e + 16, c)),
                Err(FatbinError::CompressedSizePastPayload {
                    offset: 16,
                    compressed_size: c,
                    payload_size: psize
                }),
                "{name}"
            );
        }
        for d in [u64::MAX, 1 << 40, u64::from(csize) * 40_000] {
            assert!(
                matches!(
                    with(&|b| put_u64(b, e + 56, d)),
                    Err(FatbinError::ImplausibleDecompressedSize { codec: c, .. }) if c == codec
                ),
                "{name} {d}"
            );
        }
        // One byte too many declared: the data ends early.
        assert_eq!(
            with(&|b| put_u64(b, e + 56, dsize + 1)),
            Err(FatbinError::DecompressedSizeMismatch {
                offset: 16,
                codec,
                expected: dsize + 1,
                actual: dsize
            }),
            "{name}"
        );
        // One byte too few declared: the data overflows.
        let err = with(&|b| put_u64(b, e + 56, dsize - 1)).unwrap_err();
        assert!(
            matches!(
                err,
                FatbinError::DecompressedSizeMismatch { .. } | FatbinError::Decompress { .. }
            ),
            "{name}: {err}"
        );
        assert!(with(&|b| put_u64(b, e + 56, 0)).is_err(), "{name}");
        // Shorter compressed input: the stream is cut.
        for c in [0, 1, 4, csize / 2, csize - 1] {
            let err = with(&|b| put_u32(b, e + 16, c)).unwrap_err();
            assert!(
                matches!(
                    err,
                    FatbinError::Decompress { .. }
                        | FatbinError::DecompressedSizeMismatch { .. }
                        | FatbinError::ImplausibleDecompressedSize { .. }
                ),
                "{name} csize {c}: {err}"
            );
        }
        // Garbage compressed bytes.
        let garbage = with(&|b| {
            for (i, x) in b[e + 80..e + 80 + csize as usize].iter_mut().enumerate() {
                *x = (i as u8).wrapping_mul(37) ^ 0x5a;
            }
        });
        assert!(garbage.is_err(), "{name}: {garbage:?}");
        // Both codecs at once.
        let flags = get_u64(&image, e + 40) | FLAG_LZ4 | FLAG_ZSTD;
        assert_eq!(
            with(&|b| put_u64(b, e + 40, flags)),
            Err(FatbinError::AmbiguousCompression { offset: 16, flags })
        );
        let msg = with(&|b| put_u64(b, e + 56, dsize + 1))
            .unwrap_err()
            .to_string();
        assert!(msg.contains(&format!("{}", dsize + 1)), "{msg}");
    }

    // zstd corruption inside the frame: the checksum-less frame must still
    // fail or decode to something else, never panic.
    let image = fixture("add_80_size.fatbin");
    let mut differs = 0;
    for i in 96..image.len() {
        for bit in [0x01, 0x10, 0x80] {
            let mut b = image.clone();
            b[i] ^= bit;
            match parse_fatbin(&b) {
                Err(_) => {}
                Ok(entries) if entries[0].payload.last() != Some(&0) => differs += 1,
                Ok(_) => {}
            }
        }
    }
    let _ = differs;
}

#[test]
fn compression_flags_on_uncompressed_data() {
    let image = fixture("add_80_none.fatbin");
    let e = 16;
    let flags = get_u64(&image, e + 40);
    for extra in [FLAG_ZSTD, FLAG_LZ4] {
        let mut b = image.clone();
        put_u64(&mut b, e + 40, flags | extra);
        // compressed size 0, decompressed size 0: nothing to decode.
        assert!(
            matches!(parse_fatbin(&b), Err(FatbinError::Decompress { .. })),
            "{extra:#x}: {:?}",
            parse_fatbin(&b)
        );
        put_u32(&mut b, e + 16, 0x359);
        put_u64(&mut b, e + 56, 0x35a);
        assert!(parse_fatbin(&b).is_err(), "{extra:#x}");
    }
    // Opaque: kept as stored, no decoding.
    let mut b = image.clone();
    put_u64(&mut b, e + 40, flags | FLAG_ZSTD | FLAG_OPAQUE);
    put_u32(&mut b, e + 16, 100);
    let entries = parse_fatbin(&b).unwrap();
    assert_eq!(entries[0].compression, Compression::Opaque);
    assert_eq!(entries[0].payload, image[96..196]);
}

#[test]
fn wrong_magic_and_zero_sizes() {
    assert_eq!(parse_fatbin(&[]), Err(FatbinError::EmptyImage));
    assert_eq!(
        parse_fatbin(&[0; 64]),
        Err(FatbinError::BadMagic {
            offset: 0,
            found: 0
        })
    );
    assert_eq!(
        parse_fatbin(b"\x7fELF\x02\x01\x01\0\0\0\0\0\0\0\0\0"),
        Err(FatbinError::BadMagic {
            offset: 0,
            found: 0x464c_457f
        })
    );
    let wrapper = [0xb1, 0x43, 0x62, 0x46, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert!(matches!(
        parse_fatbin(&wrapper),
        Err(FatbinError::BadMagic { .. })
    ));
    assert!(matches!(
        parse_fatbin(b".version 9.0\n.target sm_80\n"),
        Err(FatbinError::BadMagic { offset: 0, .. })
    ));

    // An empty container: valid, no entries; and several of them.
    let empty = [0x50, 0xed, 0x55, 0xba, 1, 0, 16, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    assert_eq!(parse_fatbin(&empty), Ok(vec![]));
    assert_eq!(parse_fatbin(&empty.repeat(3)), Ok(vec![]));
    assert_eq!(image_len_checked(&empty), Some(16));
    // An all-zero entry inside a container.
    let mut zero_entry = empty.to_vec();
    zero_entry.extend_from_slice(&[0; 64]);
    put_u64(&mut zero_entry, 8, 64);
    assert_eq!(
        parse_fatbin(&zero_entry),
        Err(FatbinError::BadEntryHeaderSize {
            offset: 16,
            header_size: 0,
            available: 64
        })
    );
    // A zero-size payload is fine: an empty PTX.
    let mut b = fixture("add_80_none.fatbin")[..96].to_vec();
    put_u64(&mut b, 8, 80);
    put_u64(&mut b, 24, 0);
    let entries = parse_fatbin(&b).unwrap();
    assert_eq!(entries[0].payload, b"");
    assert_eq!(select_ptx(&entries, 80), Ok(""));

    // Trailing garbage after a valid container.
    let mut b = fixture("add_80_none.fatbin");
    let n = b.len();
    b.extend_from_slice(&[0, 0, 0, 0, 1, 2, 3, 4]);
    assert!(matches!(
        parse_fatbin(&b),
        Err(FatbinError::TruncatedHeader { offset, available: 4 }) if offset == n + 4
    ));
    b.extend_from_slice(&[0; 16]);
    assert!(matches!(
        parse_fatbin(&b),
        Err(FatbinError::BadMagic { offset, .. }) if offset == n + 4
    ));
}

/// xorshift64*.
struct Rng(u64);
impl Rng {
    /// Seeds through splitmix64, so nearby seeds give unrelated streams.
    fn new(seed: u64) -> Self {
        let mut z = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        Self((z ^ (z >> 31)) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// Random mutations of the fixtures, biased towards header fields. Set
/// `FATBIN_FUZZ_SEED` / `FATBIN_FUZZ_CASES` to replay or extend a run.
#[test]
fn random_mutations_never_panic() {
    let seed = std::env::var("FATBIN_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_fa7b_1d5e_2026_u64);
    let cases: usize = std::env::var("FATBIN_FUZZ_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5000);
    println!("fuzz seed {seed} ({cases} cases); replay with FATBIN_FUZZ_SEED={seed}");
    let mut rng = Rng::new(seed);
    let originals: Vec<(Vec<u8>, Vec<usize>)> = FATBINS
        .iter()
        .filter(|n| !n.contains("two_containers") && !n.contains("lto_80_none"))
        .map(|n| {
            let image = fixture(n);
            let offsets = entry_offsets(&image);
            (image, offsets)
        })
        .collect();
    let elf = parse_fatbin(&fixture("multi_80_90a.fatbin")).unwrap()[0]
        .payload
        .clone();
    let interesting = |rng: &mut Rng, len: usize| -> u64 {
        match rng.below(10) {
            0 => 0,
            1 => 1,
            2 => len as u64,
            3 => len as u64 + 1,
            4 => len as u64 - 1,
            5 => u64::MAX,
            6 => u32::MAX as u64,
            7 => 64,
            8 => rng.below(len * 2) as u64,
            _ => rng.next(),
        }
    };
    let (mut ok, mut err) = (0usize, 0usize);
    for case in 0..cases {
        let use_elf = rng.below(8) == 0;
        let (mut b, offsets) = if use_elf {
            (elf.clone(), vec![0])
        } else {
            originals[rng.below(originals.len())].clone()
        };
        for _ in 0..1 + rng.below(4) {
            let len = b.len();
            match rng.below(6) {
                0 => {
                    let i = rng.below(len);
                    b[i] ^= 1 << rng.below(8);
                }
                1 => {
                    let i = rng.below(len);
                    b[i] = rng.next() as u8;
                }
                2 | 3 => {
                    // A header field: container header, an entry header or
                    // (for the ELF) its ELF header.
                    let base = if use_elf || rng.below(4) == 0 {
                        0
                    } else {
                        offsets[rng.below(offsets.len())]
                    };
                    let field = [
                        0, 2, 4, 6, 8, 16, 20, 24, 28, 32, 36, 40, 48, 56, 60, 64, 72, 76,
                    ][rng.below(18)];
                    let off = base + field;
                    let v = interesting(&mut rng, len);
                    let width = [2, 4, 8][rng.below(3)];
                    if off + width <= len {
                        b[off..off + width].copy_from_slice(&v.to_le_bytes()[..width]);
                    }
                }
                4 => b.truncate(rng.below(len + 1).max(1)),
                _ => {
                    let i = rng.below(len);
                    let n = rng.below(64).min(len - i);
                    let chunk = b[i..i + n].to_vec();
                    let at = rng.below(len);
                    b.splice(at..at, chunk);
                }
            }
        }
        let result = catch_unwind(AssertUnwindSafe(|| {
            if use_elf {
                let _ = image_len_checked(&b);
                let _ = image_kind(&b);
                Err(FatbinError::EmptyImage)
            } else {
                exercise(&b)
            }
        }));
        match result {
            Ok(Ok(_)) => ok += 1,
            Ok(Err(e)) => {
                // Every message names something concrete.
                assert!(!e.to_string().is_empty());
                err += 1;
            }
            Err(_) => panic!(
                "panic in fuzz case {case} with seed {seed}; input {} bytes: {:02x?}",
                b.len(),
                &b[..b.len().min(256)]
            ),
        }
    }
    println!("fuzz: {ok} parsed, {err} rejected");
    assert!(ok > cases / 50 && err > cases / 4, "ok {ok} err {err}");
}
