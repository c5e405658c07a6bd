//! Parsing of the CUDA "fatbin" container (what `nvcc -fatbin` writes and
//! what an executable's `.nv_fatbin` section holds), with decompression of
//! its LZ4 and zstd payloads, plus the small helpers a driver emulator needs
//! to handle the `image` pointer that `cuModuleLoadData` receives.
//!
//! # Format (little-endian; checked against nvcc 13.0 output)
//!
//! A container starts with a 16-byte header:
//!
//! | offset | type | meaning |
//! |-------:|------|---------|
//! | 0  | u32 | magic `0xBA55ED50` |
//! | 4  | u16 | version, 1 |
//! | 6  | u16 | header size, 16: the first entry starts here |
//! | 8  | u64 | size of the entries that follow the header |
//!
//! Entries follow back to back until the declared size is used up. Each
//! entry is a header of at least 64 bytes followed by its payload:
//!
//! | offset | type | meaning |
//! |-------:|------|---------|
//! | 0  | u16 | kind: 1 PTX, 2 ELF cubin, 8 LTO IR (NVVM) |
//! | 2  | u16 | entry version, `0x0101` |
//! | 4  | u32 | entry header size (64, 72, 80, ... 144 seen); payload starts here |
//! | 8  | u64 | payload size as stored: the data, compressed or not, zero-padded to a multiple of 8 |
//! | 16 | u32 | compressed size (0 when not compressed) |
//! | 20 | u32 | header offset of an `(offset u32, length u32)` pair locating the options string (0: none) |
//! | 24 | u16 | minor version (PTX ISA for PTX entries, e.g. 9.0) |
//! | 26 | u16 | major version |
//! | 28 | u32 | arch, `major * 10 + minor` (80, 90, 100, 120, ...) |
//! | 32 | u32 | header offset of the identifier (source file name; 0: none) |
//! | 36 | u32 | identifier length |
//! | 40 | u64 | flags: the `FLAG_*` constants, e.g. [`FLAG_ZSTD`], [`FLAG_ARCH_SPECIFIC`] |
//! | 48 | u64 | unknown (0, except on compressed LTO IR entries) |
//! | 56 | u64 | decompressed size (0 when not compressed) |
//! | 64 | ... | identifier and options strings, each zero-padded to 8 bytes (sm_100+ ELF entries: binary data, flag `0x100_0000`) |
//!
//! An LZ4-compressed payload (`-compress-mode=speed`) is one raw LZ4 block;
//! a zstd-compressed one (`size`, `balance`, `default`) is a zstd frame.
//! Decompressed PTX ends with a NUL byte. The PTX that nvcc stores is a
//! compacted form of `nvcc -ptx` output: comments are removed and runs of
//! whitespace squeezed, while line breaks are kept.
//!
//! A linked object's `.nv_fatbin` section holds several containers back to
//! back, one per translation unit; [`parse_fatbin`] reads them all.
//!
//! Every size and offset read from the image is bounds-checked: malformed
//! input gives a [`FatbinError`], never a panic or an out-of-bounds read.
#![warn(missing_docs)]

use std::ffi::CStr;
use std::io::Read;

/// Magic number at the start of a fatbin container (`0xBA55ED50`).
pub const FATBIN_MAGIC: u32 = 0xBA55_ED50;
/// Magic number of the host-side `__fatBinC_Wrapper_t` struct
/// (`{ int magic; int version; const unsigned long long *data; void *filename_or_fatbins; }`)
/// that nvcc emits in `.nvFatBinSegment` and passes to `__cudaRegisterFatBinary`.
pub const FATBIN_WRAPPER_MAGIC: u32 = 0x4662_43B1;

/// Entry flag: 64-bit compile.
pub const FLAG_64BIT: u64 = 0x1;
/// Entry flag: debug compile (`-G`).
pub const FLAG_DEBUG: u64 = 0x2;
/// Entry flag: built on a Linux host.
pub const FLAG_HOST_LINUX: u64 = 0x10;
/// Entry flag: payload is one raw LZ4 block.
pub const FLAG_LZ4: u64 = 0x2000;
/// Entry flag: payload is a zstd frame.
pub const FLAG_ZSTD: u64 = 0x8000;
/// Entry flag seen only on compressed LTO IR entries (with [`FLAG_LZ4`] or
/// [`FLAG_ZSTD`]): their compressed bytes are then not a plain LZ4 block or
/// zstd frame, and the u64 at entry offset 48 is nonzero. Such payloads are
/// kept as stored ([`Compression::Opaque`]).
pub const FLAG_OPAQUE: u64 = 0x1_0000;
/// Entry flag: arch-specific target, the `a` suffix (`sm_90a`, `compute_100a`).
pub const FLAG_ARCH_SPECIFIC: u64 = 0x10_0000;
/// Entry flag: family-specific target, the `f` suffix (`sm_100f`, `compute_120f`).
pub const FLAG_FAMILY_SPECIFIC: u64 = 0x20_0000;

const HEADER_LEN: usize = 16;
const ENTRY_HEADER_MIN: usize = 64;
const KIND_PTX: u16 = 1;
const KIND_ELF: u16 = 2;
const KIND_LTO_IR: u16 = 8;
/// LZ4 cannot expand one input byte into more than 255 output bytes.
const LZ4_MAX_RATIO: u64 = 256;
/// A zstd RLE block (4 bytes) expands to at most 128 KiB.
const ZSTD_MAX_RATIO: u64 = 32 * 1024;
/// Smallest zstd window limit, so valid frames with a generous window pass.
const ZSTD_MIN_WINDOW_LIMIT: u64 = 8 << 20;

/// What a fatbin entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// PTX text (kind 1).
    Ptx,
    /// An ELF cubin (kind 2).
    Elf,
    /// LTO IR for link-time optimisation, `code=lto_XX` (kind 8).
    LtoIr,
    /// Any other kind number.
    Other(u16),
}

impl EntryKind {
    fn from_raw(raw: u16) -> Self {
        match raw {
            KIND_PTX => Self::Ptx,
            KIND_ELF => Self::Elf,
            KIND_LTO_IR => Self::LtoIr,
            other => Self::Other(other),
        }
    }
}

/// How an entry's payload was stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    /// Stored as is.
    None,
    /// One raw LZ4 block ([`FLAG_LZ4`]).
    Lz4,
    /// A zstd frame ([`FLAG_ZSTD`]).
    Zstd,
    /// Compressed in a form this module does not decode ([`FLAG_OPAQUE`]);
    /// the payload is the stored compressed bytes.
    Opaque,
}

/// One entry of a fatbin, with its payload decompressed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FatbinEntry {
    /// Offset of the entry header from the start of the parsed image.
    pub offset: usize,
    /// What the payload is.
    pub kind: EntryKind,
    /// Target arch as `major * 10 + minor`, e.g. 80, 90, 100.
    pub arch: u32,
    /// The target is arch-specific (`a` suffix, e.g. `compute_90a`): it runs
    /// only on a device of exactly this arch.
    pub arch_specific: bool,
    /// The target is family-specific (`f` suffix, e.g. `compute_100f`): it
    /// runs on devices of the same major version and at least this arch.
    pub family_specific: bool,
    /// PTX ISA version as `(major, minor)`, for PTX entries only.
    pub ptx_version: Option<(u16, u16)>,
    /// How the payload was stored in the image.
    pub compression: Compression,
    /// The raw entry flags (see the `FLAG_*` constants).
    pub flags: u64,
    /// The identifier, nvcc's name for the source file (present with
    /// `-lineinfo`, `-G` or when nvcc is given a path).
    pub identifier: Option<String>,
    /// The ptxas options recorded with a PTX or LTO IR entry, trimmed
    /// (e.g. `--generate-line-info`); `None` when absent or empty.
    pub options: Option<String>,
    /// The payload, decompressed. Uncompressed payloads keep the zero
    /// padding that rounds them up to 8 bytes; PTX text ends at its first
    /// NUL. For [`Compression::Opaque`] these are the stored compressed bytes.
    pub payload: Vec<u8>,
}

impl FatbinEntry {
    /// The PTX text of a PTX entry: the payload up to its first NUL byte.
    /// `None` for other kinds or when the text is not UTF-8.
    pub fn ptx_text(&self) -> Option<&str> {
        if self.kind != EntryKind::Ptx {
            return None;
        }
        let end = self
            .payload
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(self.payload.len());
        std::str::from_utf8(&self.payload[..end]).ok()
    }

    fn target_name(&self) -> String {
        let prefix = if self.kind == EntryKind::Ptx {
            "compute"
        } else {
            "sm"
        };
        let suffix = if self.arch_specific {
            "a"
        } else if self.family_specific {
            "f"
        } else {
            ""
        };
        format!("{prefix}_{}{suffix}", self.arch)
    }

    /// Whether this entry's code can run on a device of arch `sm`.
    fn runs_on(&self, sm: u32) -> bool {
        if self.arch_specific {
            self.arch == sm
        } else if self.family_specific {
            self.arch / 10 == sm / 10 && self.arch <= sm
        } else {
            self.arch <= sm
        }
    }
}

/// What an image handed to `cuModuleLoadData` is, judged by its first bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageKind {
    /// A fatbin container ([`FATBIN_MAGIC`]).
    Fatbin,
    /// A host-side `__fatBinC_Wrapper_t` ([`FATBIN_WRAPPER_MAGIC`]); see
    /// [`unwrap_fatbin_wrapper`].
    FatbinWrapper,
    /// NUL-terminated PTX text (starts with printable ASCII or whitespace).
    PtxText,
    /// An ELF file (a cubin).
    Elf,
    /// Anything else.
    Unknown,
}

/// Errors from parsing a fatbin or choosing an entry from it. Offsets count
/// from the start of the image given to [`parse_fatbin`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FatbinError {
    /// The image has no bytes at all.
    #[error("empty image: 0 bytes")]
    EmptyImage,
    /// Fewer than 16 bytes are left for a container header.
    #[error(
        "fatbin header at offset {offset} is truncated: it needs 16 bytes, {available} remain"
    )]
    TruncatedHeader {
        /// Offset of the header.
        offset: usize,
        /// Bytes left in the image.
        available: usize,
    },
    /// The container magic is wrong.
    #[error("bad magic {found:#010x} at offset {offset}, expected {FATBIN_MAGIC:#010x}")]
    BadMagic {
        /// Offset of the header.
        offset: usize,
        /// The value found.
        found: u32,
    },
    /// The container version is not 1.
    #[error("fatbin header at offset {offset} has version {version}, only 1 is supported")]
    UnsupportedVersion {
        /// Offset of the header.
        offset: usize,
        /// The version found.
        version: u16,
    },
    /// The container header size is below 16.
    #[error(
        "fatbin header at offset {offset} declares header size {header_size}, below the minimum 16"
    )]
    BadHeaderSize {
        /// Offset of the header.
        offset: usize,
        /// The declared header size.
        header_size: u16,
    },
    /// The container's declared size runs past the end of the image.
    #[error(
        "fatbin at offset {offset} declares {header_size} header bytes and {entries_size} entry bytes, but only {available} bytes remain"
    )]
    ContainerPastEnd {
        /// Offset of the header.
        offset: usize,
        /// The declared header size.
        header_size: u16,
        /// The declared size of the entries.
        entries_size: u64,
        /// Bytes left in the image from `offset`.
        available: usize,
    },
    /// Fewer than 64 bytes are left in the container for an entry header.
    #[error(
        "entry header at offset {offset} is truncated: it needs 64 bytes, {available} remain in its container"
    )]
    TruncatedEntryHeader {
        /// Offset of the entry.
        offset: usize,
        /// Bytes left in the container from `offset`.
        available: usize,
    },
    /// The entry header size is below 64 or runs past the container.
    #[error(
        "entry at offset {offset} declares header size {header_size}: it must be at least 64 and at most the {available} bytes left in its container"
    )]
    BadEntryHeaderSize {
        /// Offset of the entry.
        offset: usize,
        /// The declared entry header size.
        header_size: u32,
        /// Bytes left in the container from `offset`.
        available: usize,
    },
    /// The entry payload runs past the end of its container.
    #[error(
        "entry at offset {offset}: payload of {payload_size} bytes at offset {payload_offset} runs past the container end at offset {container_end}"
    )]
    PayloadPastEnd {
        /// Offset of the entry.
        offset: usize,
        /// Offset of the payload.
        payload_offset: usize,
        /// The declared payload size.
        payload_size: u64,
        /// Offset just past the container.
        container_end: usize,
    },
    /// A string (or the options locator) lies outside the entry header.
    #[error(
        "entry at offset {offset}: {field} ({len} bytes at header offset {field_offset}) lies outside the {header_size}-byte entry header"
    )]
    FieldOutOfBounds {
        /// Offset of the entry.
        offset: usize,
        /// Which field: `"identifier"`, `"options locator"` or `"options"`.
        field: &'static str,
        /// Declared offset of the field within the entry header.
        field_offset: u32,
        /// Declared length of the field.
        len: u32,
        /// The entry header size.
        header_size: u32,
    },
    /// Both LZ4 and zstd flags are set.
    #[error("entry at offset {offset}: flags {flags:#x} select both LZ4 and zstd compression")]
    AmbiguousCompression {
        /// Offset of the entry.
        offset: usize,
        /// The entry flags.
        flags: u64,
    },
    /// The compressed size exceeds the stored payload size.
    #[error(
        "entry at offset {offset}: compressed size {compressed_size} exceeds the {payload_size}-byte payload"
    )]
    CompressedSizePastPayload {
        /// Offset of the entry.
        offset: usize,
        /// The declared compressed size.
        compressed_size: u32,
        /// The declared payload size.
        payload_size: u64,
    },
    /// The declared decompressed size cannot come from that much compressed data.
    #[error(
        "entry at offset {offset}: decompressed size {decompressed_size} is impossible for {compressed_size} bytes of {codec:?} data"
    )]
    ImplausibleDecompressedSize {
        /// Offset of the entry.
        offset: usize,
        /// The codec.
        codec: Compression,
        /// The declared compressed size.
        compressed_size: u32,
        /// The declared decompressed size.
        decompressed_size: u64,
    },
    /// The compressed data is malformed.
    #[error(
        "entry at offset {offset}: {codec:?} data ({compressed_size} bytes at offset {payload_offset}) is malformed: {detail}"
    )]
    Decompress {
        /// Offset of the entry.
        offset: usize,
        /// Offset of the payload.
        payload_offset: usize,
        /// The codec.
        codec: Compression,
        /// The declared compressed size.
        compressed_size: u32,
        /// What the decoder reported.
        detail: String,
    },
    /// The data decompressed to a size other than the declared one.
    #[error(
        "entry at offset {offset}: {codec:?} data decompressed to {actual} bytes, the header declares {expected}"
    )]
    DecompressedSizeMismatch {
        /// Offset of the entry.
        offset: usize,
        /// The codec.
        codec: Compression,
        /// The declared decompressed size.
        expected: u64,
        /// Bytes produced; decoding stops at `expected + 1`, so a larger
        /// output reads as `expected + 1`.
        actual: u64,
    },
    /// No PTX entry can run on the requested arch.
    #[error("no PTX for sm_{sm} among [{available}]")]
    NoCompatiblePtx {
        /// The requested arch.
        sm: u32,
        /// The PTX targets present, comma-separated.
        available: String,
    },
    /// The chosen PTX entry is not UTF-8 text.
    #[error("PTX entry at offset {offset} ({target}) is not UTF-8 text")]
    InvalidPtxText {
        /// Offset of the entry.
        offset: usize,
        /// Its target, e.g. `compute_90a`.
        target: String,
    },
}

fn u16_at(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}

/// Classifies an image by its first bytes; see [`ImageKind`]. A PTX text is
/// recognised by its first (up to four) bytes being printable ASCII or
/// whitespace; all three magics contain bytes outside that range.
pub fn image_kind(bytes: &[u8]) -> ImageKind {
    let head = &bytes[..bytes.len().min(4)];
    let head = match head.iter().position(|&b| b == 0) {
        Some(nul) => &head[..nul],
        None => head,
    };
    classify(head)
}

/// `head`: the first four bytes of the image, or fewer when a NUL (not
/// included) comes first.
fn classify(head: &[u8]) -> ImageKind {
    if let Ok(word) = <[u8; 4]>::try_from(head) {
        match u32::from_le_bytes(word) {
            FATBIN_MAGIC => return ImageKind::Fatbin,
            FATBIN_WRAPPER_MAGIC => return ImageKind::FatbinWrapper,
            _ if word == *b"\x7fELF" => return ImageKind::Elf,
            _ => {}
        }
    }
    let is_text = |b: &u8| matches!(b, b'\t' | b'\n' | b'\r' | 0x20..=0x7e);
    if !head.is_empty() && head.iter().all(is_text) {
        ImageKind::PtxText
    } else {
        ImageKind::Unknown
    }
}

/// Random access to an image whose length is not known.
trait Source {
    /// Fills `buf` from `off`; false when those bytes are not available.
    fn read(&self, off: usize, buf: &mut [u8]) -> bool;
    /// Length of the NUL-terminated string at 0, NUL excluded.
    fn strlen(&self) -> Option<usize>;
}

impl Source for &[u8] {
    fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        match off
            .checked_add(buf.len())
            .and_then(|end| self.get(off..end))
        {
            Some(src) => {
                buf.copy_from_slice(src);
                true
            }
            None => false,
        }
    }

    fn strlen(&self) -> Option<usize> {
        self.iter().position(|&b| b == 0)
    }
}

/// A raw image pointer; only built by [`image_len`], whose caller vouches
/// that every read done here stays inside the image.
struct RawImage(*const u8);

impl Source for RawImage {
    fn read(&self, off: usize, buf: &mut [u8]) -> bool {
        if off.checked_add(buf.len()).is_none() {
            return false;
        }
        // SAFETY: `image_len`'s contract: the pointer is a valid image and
        // the offsets read here are those its own headers describe.
        unsafe { std::ptr::copy_nonoverlapping(self.0.add(off), buf.as_mut_ptr(), buf.len()) };
        true
    }

    fn strlen(&self) -> Option<usize> {
        // SAFETY: `image_len`'s contract: PTX text is NUL-terminated.
        Some(unsafe { CStr::from_ptr(self.0.cast()) }.count_bytes())
    }
}

/// The length in bytes of the image `ptr` points to, given only the
/// pointer, as `cuModuleLoadData` gets it. `None` when the kind is
/// [`ImageKind::Unknown`] or [`ImageKind::FatbinWrapper`] (call
/// [`unwrap_fatbin_wrapper`] first) or the headers are inconsistent.
///
/// * Fatbin: header size plus declared entries size of the first container
///   only (the driver loads one container from a pointer).
/// * PTX text: the number of bytes before the terminating NUL (NUL excluded).
/// * ELF (64-bit little-endian only; cubins always are): the largest end
///   offset of the ELF header, the program header table, every segment's
///   file image, the section header table and every section's file data
///   (`SHT_NOBITS` excluded). Extended section numbering is honoured.
///
/// The image is read one byte at a time until its kind is known, so a
/// short PTX string is never over-read.
///
/// # Safety
///
/// `ptr` must point to a readable image of the kind its first bytes say:
/// a fatbin's 16-byte header, a NUL-terminated string, or a well-formed
/// ELF whose headers lie where its ELF header says.
pub unsafe fn image_len(ptr: *const u8) -> Option<usize> {
    len_of(&RawImage(ptr))
}

/// Like [`image_len`], for an image in a slice: every read is checked, and
/// the result is `None` also when the image would run past the end of
/// `bytes` (for PTX text: when there is no NUL in `bytes`).
pub fn image_len_checked(bytes: &[u8]) -> Option<usize> {
    len_of(&bytes).filter(|&len| len <= bytes.len())
}

fn len_of(src: &impl Source) -> Option<usize> {
    let mut head = [0u8; 4];
    let mut n = 0;
    while n < 4 {
        let mut b = [0u8];
        if !src.read(n, &mut b) || b[0] == 0 {
            break;
        }
        head[n] = b[0];
        n += 1;
    }
    match classify(&head[..n]) {
        ImageKind::Fatbin => {
            let mut h = [0u8; HEADER_LEN];
            if !src.read(0, &mut h) {
                return None;
            }
            let header_size = u16_at(&h, 6);
            if usize::from(header_size) < HEADER_LEN {
                return None;
            }
            usize::try_from(u64_at(&h, 8))
                .ok()?
                .checked_add(usize::from(header_size))
        }
        ImageKind::PtxText => src.strlen(),
        ImageKind::Elf => elf_len(src),
        ImageKind::FatbinWrapper | ImageKind::Unknown => None,
    }
}

fn elf_len(src: &impl Source) -> Option<usize> {
    const EHDR: usize = 64;
    let mut eh = [0u8; EHDR];
    // ELFCLASS64, ELFDATA2LSB.
    if !src.read(0, &mut eh) || eh[4] != 2 || eh[5] != 1 {
        return None;
    }
    let to_usize = |v: u64| usize::try_from(v).ok();
    let table_end =
        |off: usize, count: usize, size: usize| off.checked_add(count.checked_mul(size)?);
    let phoff = to_usize(u64_at(&eh, 0x20))?;
    let shoff = to_usize(u64_at(&eh, 0x28))?;
    let phentsize = usize::from(u16_at(&eh, 0x36));
    let phnum = usize::from(u16_at(&eh, 0x38));
    let shentsize = usize::from(u16_at(&eh, 0x3a));
    let mut shnum = usize::from(u16_at(&eh, 0x3c));

    let mut end = EHDR.max(usize::from(u16_at(&eh, 0x34)));
    if phnum > 0 {
        if phentsize < 0x38 {
            return None;
        }
        end = end.max(table_end(phoff, phnum, phentsize)?);
        for i in 0..phnum {
            let mut ph = [0u8; 0x38];
            if !src.read(phoff.checked_add(i * phentsize)?, &mut ph) {
                return None;
            }
            let offset = to_usize(u64_at(&ph, 0x08))?;
            let filesz = to_usize(u64_at(&ph, 0x20))?;
            end = end.max(offset.checked_add(filesz)?);
        }
    }
    if shoff != 0 {
        if shentsize < 0x40 {
            return None;
        }
        let mut sh = [0u8; 0x40];
        if shnum == 0 {
            // Extended numbering: the count is section 0's sh_size.
            if !src.read(shoff, &mut sh) {
                return None;
            }
            shnum = usize::try_from(u32::try_from(u64_at(&sh, 0x20)).ok()?).ok()?;
        }
        end = end.max(table_end(shoff, shnum, shentsize)?);
        for i in 0..shnum {
            if !src.read(shoff.checked_add(i.checked_mul(shentsize)?)?, &mut sh) {
                return None;
            }
            const SHT_NOBITS: u32 = 8;
            if u32_at(&sh, 4) != SHT_NOBITS {
                let offset = to_usize(u64_at(&sh, 0x18))?;
                let size = to_usize(u64_at(&sh, 0x20))?;
                end = end.max(offset.checked_add(size)?);
            }
        }
    }
    Some(end)
}

/// If `ptr` points to a host-side `__fatBinC_Wrapper_t` (magic
/// [`FATBIN_WRAPPER_MAGIC`]), returns its `data` pointer (the fatbin);
/// otherwise returns `ptr` unchanged.
///
/// # Safety
///
/// `ptr` must be readable for 4 bytes, and for 16 bytes (a wrapper's
/// magic, version and data pointer) when it starts with the wrapper magic.
pub unsafe fn unwrap_fatbin_wrapper(ptr: *const u8) -> *const u8 {
    // SAFETY: the caller guarantees 4 readable bytes. The wrapper is a host
    // struct, so its `int magic` is in host byte order.
    let magic = unsafe { ptr.cast::<u32>().read_unaligned() };
    if magic != FATBIN_WRAPPER_MAGIC {
        return ptr;
    }
    // SAFETY: a wrapper holds its `data` pointer at offset 8 (after two
    // ints), and the caller guarantees those bytes are readable.
    unsafe { ptr.add(8).cast::<*const u8>().read_unaligned() }
}

/// Parses every container in `image` and returns all their entries in
/// order, payloads decompressed. Containers follow each other directly; zero
/// bytes between or after them (section padding) are skipped. A container
/// that declares no entries is valid and contributes none.
pub fn parse_fatbin(image: &[u8]) -> Result<Vec<FatbinEntry>, FatbinError> {
    if image.is_empty() {
        return Err(FatbinError::EmptyImage);
    }
    let mut entries = Vec::new();
    let mut pos = 0;
    loop {
        pos = parse_container(image, pos, &mut entries)?;
        match image[pos..].iter().position(|&b| b != 0) {
            Some(skip) => pos += skip,
            None => return Ok(entries),
        }
    }
}

/// Parses the container at `start`, returns the offset just past it.
fn parse_container(
    image: &[u8],
    start: usize,
    entries: &mut Vec<FatbinEntry>,
) -> Result<usize, FatbinError> {
    let rest = &image[start..];
    if rest.len() < HEADER_LEN {
        return Err(FatbinError::TruncatedHeader {
            offset: start,
            available: rest.len(),
        });
    }
    let magic = u32_at(rest, 0);
    if magic != FATBIN_MAGIC {
        return Err(FatbinError::BadMagic {
            offset: start,
            found: magic,
        });
    }
    let version = u16_at(rest, 4);
    if version != 1 {
        return Err(FatbinError::UnsupportedVersion {
            offset: start,
            version,
        });
    }
    let header_size = u16_at(rest, 6);
    if usize::from(header_size) < HEADER_LEN {
        return Err(FatbinError::BadHeaderSize {
            offset: start,
            header_size,
        });
    }
    let entries_size = u64_at(rest, 8);
    let past_end = FatbinError::ContainerPastEnd {
        offset: start,
        header_size,
        entries_size,
        available: rest.len(),
    };
    let total = usize::try_from(entries_size)
        .ok()
        .and_then(|s| s.checked_add(usize::from(header_size)))
        .ok_or_else(|| past_end.clone())?;
    if total > rest.len() {
        return Err(past_end);
    }
    let end = start + total;
    let mut pos = start + usize::from(header_size);
    while pos < end {
        pos = parse_entry(image, pos, end, entries)?;
    }
    Ok(end)
}

/// Parses the entry at `offset` of a container ending at `end`, returns the
/// offset of the next entry.
fn parse_entry(
    image: &[u8],
    offset: usize,
    end: usize,
    entries: &mut Vec<FatbinEntry>,
) -> Result<usize, FatbinError> {
    let available = end - offset;
    if available < ENTRY_HEADER_MIN {
        return Err(FatbinError::TruncatedEntryHeader { offset, available });
    }
    let h = &image[offset..end];
    let raw_kind = u16_at(h, 0);
    let header_size = u32_at(h, 4);
    let hs = usize::try_from(header_size)
        .ok()
        .filter(|&hs| (ENTRY_HEADER_MIN..=available).contains(&hs))
        .ok_or(FatbinError::BadEntryHeaderSize {
            offset,
            header_size,
            available,
        })?;
    let header = &h[..hs];
    let payload_size = u64_at(h, 8);
    let payload_offset = offset + hs;
    let stored = usize::try_from(payload_size)
        .ok()
        .filter(|&ps| ps <= available - hs)
        .map(|ps| &h[hs..hs + ps])
        .ok_or(FatbinError::PayloadPastEnd {
            offset,
            payload_offset,
            payload_size,
            container_end: end,
        })?;

    let compressed_size = u32_at(h, 16);
    let options_locator = u32_at(h, 20);
    let minor = u16_at(h, 24);
    let major = u16_at(h, 26);
    let arch = u32_at(h, 28);
    let name_offset = u32_at(h, 32);
    let name_len = u32_at(h, 36);
    let flags = u64_at(h, 40);
    let decompressed_size = u64_at(h, 56);
    let kind = EntryKind::from_raw(raw_kind);

    let field = |name: &'static str, field_offset: u32, len: u32| {
        let range = usize::try_from(field_offset).ok().and_then(|o| {
            let e = o.checked_add(usize::try_from(len).ok()?)?;
            (e <= hs).then_some(o..e)
        });
        range
            .map(|r| &header[r])
            .ok_or(FatbinError::FieldOutOfBounds {
                offset,
                field: name,
                field_offset,
                len,
                header_size,
            })
    };
    let identifier = if name_len == 0 {
        None
    } else {
        let raw = field("identifier", name_offset, name_len)?;
        Some(String::from_utf8_lossy(raw).into_owned())
    };
    // ELF entries of sm_100+ point this locator at binary data, not options.
    let options = if options_locator == 0 || kind == EntryKind::Elf {
        None
    } else {
        let loc = field("options locator", options_locator, 8)?;
        let (opt_offset, opt_len) = (u32_at(loc, 0), u32_at(loc, 4));
        if opt_len == 0 {
            None
        } else {
            let raw = field("options", opt_offset, opt_len)?;
            let text = String::from_utf8_lossy(raw);
            let text = text.trim_matches(|c: char| c.is_whitespace() || c == '\0');
            (!text.is_empty()).then(|| text.to_owned())
        }
    };

    let compression = match (flags & FLAG_LZ4 != 0, flags & FLAG_ZSTD != 0) {
        (false, false) => Compression::None,
        (true, true) => return Err(FatbinError::AmbiguousCompression { offset, flags }),
        _ if flags & FLAG_OPAQUE != 0 => Compression::Opaque,
        (true, false) => Compression::Lz4,
        (false, true) => Compression::Zstd,
    };
    let compressed = || {
        usize::try_from(compressed_size)
            .ok()
            .and_then(|cs| stored.get(..cs))
            .ok_or(FatbinError::CompressedSizePastPayload {
                offset,
                compressed_size,
                payload_size,
            })
    };
    let payload = match compression {
        Compression::None => stored.to_vec(),
        Compression::Opaque => compressed()?.to_vec(),
        codec => {
            let input = compressed()?;
            let ratio = if codec == Compression::Lz4 {
                LZ4_MAX_RATIO
            } else {
                ZSTD_MAX_RATIO
            };
            let expected = usize::try_from(decompressed_size)
                .ok()
                .filter(|_| decompressed_size <= u64::from(compressed_size) * ratio + 64)
                .ok_or(FatbinError::ImplausibleDecompressedSize {
                    offset,
                    codec,
                    compressed_size,
                    decompressed_size,
                })?;
            let decoded = if codec == Compression::Lz4 {
                lz4_decode(input, expected)
            } else {
                zstd_decode(input, expected)
            };
            let out = decoded.map_err(|detail| FatbinError::Decompress {
                offset,
                payload_offset,
                codec,
                compressed_size,
                detail,
            })?;
            if out.len() != expected {
                return Err(FatbinError::DecompressedSizeMismatch {
                    offset,
                    codec,
                    expected: decompressed_size,
                    actual: out.len() as u64,
                });
            }
            out
        }
    };

    entries.push(FatbinEntry {
        offset,
        kind,
        arch,
        arch_specific: flags & FLAG_ARCH_SPECIFIC != 0,
        family_specific: flags & FLAG_FAMILY_SPECIFIC != 0,
        ptx_version: (kind == EntryKind::Ptx).then_some((major, minor)),
        compression,
        flags,
        identifier,
        options,
        payload,
    });
    Ok(payload_offset + stored.len())
}

/// Decodes one raw LZ4 block of at most `expected` bytes. A longer output
/// is an error from the decoder; a shorter one is returned as is.
fn lz4_decode(input: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let mut out = vec![0u8; expected];
    let n = lz4_flex::block::decompress_into(input, &mut out).map_err(|e| e.to_string())?;
    out.truncate(n);
    Ok(out)
}

/// Decodes the zstd frames (at least one) in `input`, producing at most `expected + 1`
/// bytes (enough to tell that the output is too long). Zero padding after
/// the last frame is ignored.
fn zstd_decode(input: &[u8], expected: usize) -> Result<Vec<u8>, String> {
    let window_limit = (expected as u64)
        .checked_next_power_of_two()
        .map_or(u64::MAX, |w| w.saturating_mul(2))
        .max(ZSTD_MIN_WINDOW_LIMIT);
    let mut src = input;
    let mut out = Vec::with_capacity(expected.min(64 << 20));
    if src.iter().all(|&b| b == 0) {
        return Err("no zstd frame".to_owned());
    }
    while src.iter().any(|&b| b != 0) && out.len() <= expected {
        let mut dec =
            ruzstd::decoding::StreamingDecoder::new_with_max_window_size(&mut src, window_limit)
                .map_err(|e| e.to_string())?;
        let budget = (expected + 1 - out.len()) as u64;
        (&mut dec)
            .take(budget)
            .read_to_end(&mut out)
            .map_err(|e| e.to_string())?;
        if out.len() > expected {
            break;
        }
        let frame = &dec.decoder;
        if !frame.is_finished() {
            return Err("frame ends early".to_owned());
        }
        // No let-chains: the module must also build in edition 2021 crates.
        match (
            frame.get_checksum_from_data(),
            frame.get_calculated_checksum(),
        ) {
            (Some(stored), Some(computed)) if stored != computed => {
                return Err(format!(
                    "checksum mismatch: frame says {stored:#010x}, data gives {computed:#010x}"
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

/// The PTX text to JIT for a device of arch `sm` (`major * 10 + minor`,
/// e.g. 86): among the PTX entries that can run there, the one of the
/// highest arch; at equal arch an arch-specific entry beats a
/// family-specific one, which beats a plain one. An arch-specific entry
/// (`compute_90a`) runs only on exactly its arch; a family-specific one
/// (`compute_100f`) on its major version at or above its arch; a plain one
/// on every arch at or above its own. The text ends before the first NUL.
pub fn select_ptx(entries: &[FatbinEntry], sm: u32) -> Result<&str, FatbinError> {
    let ptx = || entries.iter().filter(|e| e.kind == EntryKind::Ptx);
    let best = ptx()
        .filter(|e| e.runs_on(sm))
        .max_by_key(|e| (e.arch, e.arch_specific, e.family_specific));
    match best {
        Some(entry) => entry.ptx_text().ok_or_else(|| FatbinError::InvalidPtxText {
            offset: entry.offset,
            target: entry.target_name(),
        }),
        None => Err(FatbinError::NoCompatiblePtx {
            sm,
            available: ptx()
                .map(FatbinEntry::target_name)
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
