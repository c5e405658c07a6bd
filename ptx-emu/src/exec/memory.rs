//! Device global memory: allocations with bounds and a per-byte "initialised" bit, at addresses
//! that leave a guard gap after every allocation (so an access just past the end hits no other
//! allocation and is reported), and the windows of the generic address space.

use std::cell::UnsafeCell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

/// The generic address of shared-window offset 0 (`cvta.shared`). Its low 32 bits are zero, so a
/// generic shared address truncated to 32 bits is the shared offset.
pub(crate) const SHARED_WINDOW: u64 = 0x0000_0100_0000_0000;
/// The generic address of local-window offset 0 (`cvta.local`), per thread.
pub(crate) const LOCAL_WINDOW: u64 = 0x0000_0200_0000_0000;
/// The generic address of kernel-parameter offset 0 (`cvta.param`).
pub(crate) const PARAM_WINDOW: u64 = 0x0000_0300_0000_0000;
/// The generic address of constant-bank offset 0 (`cvta.const`).
pub(crate) const CONST_WINDOW: u64 = 0x0000_0400_0000_0000;
/// The size of each window.
pub(crate) const WINDOW_SIZE: u64 = 1 << 32;
/// Where global allocations start.
const GLOBAL_BASE: u64 = 0x0000_7000_0000_0000;
/// Alignment of allocations (cudaMalloc guarantees 256 bytes).
pub(crate) const ALLOC_ALIGN: u64 = 256;
/// Minimum unmapped gap after each allocation.
const GUARD: u64 = 1 << 16;

/// The state space a generic address falls in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Window {
    Global(u64),
    Shared(u64),
    Local(u64),
    Param(u64),
    Const(u64),
}

/// Classify a generic address.
pub(crate) fn decode_generic(addr: u64) -> Window {
    let within = |base: u64| addr >= base && addr - base < WINDOW_SIZE;
    if within(SHARED_WINDOW) {
        Window::Shared(addr - SHARED_WINDOW)
    } else if within(LOCAL_WINDOW) {
        Window::Local(addr - LOCAL_WINDOW)
    } else if within(PARAM_WINDOW) {
        Window::Param(addr - PARAM_WINDOW)
    } else if within(CONST_WINDOW) {
        Window::Const(addr - CONST_WINDOW)
    } else {
        Window::Global(addr)
    }
}

/// One device allocation. Its bytes are accessed through raw pointers by the interpreter and the
/// copy engine of the calling host thread; concurrent use of one allocation from two host threads
/// is a data race in the program being emulated, as it would be on a GPU.
pub struct Allocation {
    /// First device address.
    pub base: u64,
    /// Size in bytes.
    pub size: u64,
    data: UnsafeCell<Vec<u8>>,
    init: UnsafeCell<Vec<u64>>,
}

// SAFETY: see the type's documentation: accesses are unsynchronised like device memory.
unsafe impl Sync for Allocation {}
// SAFETY: the buffers are plain owned vectors.
unsafe impl Send for Allocation {}

/// A zero-filled vector of `n` elements, or None when the host cannot provide the memory (the
/// pages are zeroed lazily by the operating system, so a large allocation costs nothing until used).
fn try_zeroed<T: Copy + Default>(n: usize) -> Option<Vec<T>> {
    if n == 0 {
        return Some(Vec::new());
    }
    let layout = std::alloc::Layout::array::<T>(n).ok()?;
    // SAFETY: a non-zero layout; zero bytes are a valid T for the integer types used here; the
    // vector takes ownership of the allocation with exactly this layout.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut T;
        if p.is_null() {
            None
        } else {
            Some(Vec::from_raw_parts(p, n, n))
        }
    }
}

impl Allocation {
    fn new(base: u64, size: u64) -> Option<Self> {
        let size_usize = usize::try_from(size).ok()?;
        Some(Allocation {
            base,
            size,
            data: UnsafeCell::new(try_zeroed::<u8>(size_usize)?),
            init: UnsafeCell::new(try_zeroed::<u64>(size_usize.div_ceil(64))?),
        })
    }

    /// Whether `[addr, addr + len)` lies inside this allocation.
    pub(crate) fn contains(&self, addr: u64, len: u64) -> bool {
        addr >= self.base && addr - self.base <= self.size && self.size - (addr - self.base) >= len
    }

    /// The bytes at offset `off`.
    ///
    /// # Safety
    /// `off + len <= size`, and no other reference to these bytes is live.
    #[allow(clippy::mut_from_ref)]
    pub(crate) unsafe fn bytes(&self, off: u64, len: usize) -> &mut [u8] {
        let data = &mut *self.data.get();
        &mut data[off as usize..off as usize + len]
    }

    /// Mark `[off, off + len)` initialised.
    pub(crate) fn set_init(&self, off: u64, len: u64) {
        // SAFETY: bit operations on the allocation's own bitmap, see the type's documentation.
        let init = unsafe { &mut *self.init.get() };
        set_bits(init, off, len);
    }

    /// The first byte of `[off, off + len)` that was never written, if any.
    pub(crate) fn first_uninit(&self, off: u64, len: u64) -> Option<u64> {
        // SAFETY: read of the allocation's bitmap, see the type's documentation.
        let init = unsafe { &*self.init.get() };
        first_clear(init, off, len)
    }

    /// Copy the init bits of `[src_off, +len)` of `src` to `[dst_off, +len)` of `self` (`src` may be
    /// `self`, the ranges may overlap).
    pub(crate) fn copy_init_from(&self, dst_off: u64, src: &Allocation, src_off: u64, len: u64) {
        // The source bits are read out first, so that overlapping ranges copy as memmove does.
        let bits = {
            // SAFETY: read of the source's bitmap, see the type's documentation; the reference
            // ends before the destination's bitmap is written.
            let init = unsafe { &*src.init.get() };
            (0..len.div_ceil(64))
                .map(|i| bits_at(init, src_off + 64 * i))
                .collect::<Vec<u64>>()
        };
        // SAFETY: as in set_init.
        let init = unsafe { &mut *self.init.get() };
        put_bits(init, dst_off, len, &bits);
    }
}

/// The 64 bits of a bitmap from bit `pos` on (bits past its end read as clear).
fn bits_at(bits: &[u64], pos: u64) -> u64 {
    let (w, b) = ((pos / 64) as usize, pos % 64);
    let low = bits.get(w).map_or(0, |&v| v >> b);
    if b == 0 {
        low
    } else {
        low | bits.get(w + 1).map_or(0, |&v| v << (64 - b))
    }
}

/// Overwrite bits `[off, off + len)` of a bitmap with the first `len` bits of `src`, a word (or the
/// part of one up to the next word boundary of `bits`) at a time.
fn put_bits(bits: &mut [u64], off: u64, len: u64, src: &[u64]) {
    let mut done = 0;
    while done < len {
        let pos = off + done;
        let (w, b) = ((pos / 64) as usize, pos % 64);
        let n = (64 - b).min(len - done);
        let mask = (u64::MAX >> (64 - n)) << b;
        bits[w] = (bits[w] & !mask) | ((bits_at(src, done) << b) & mask);
        done += n;
    }
}

/// Set bits `[off, off + len)` of a bitmap.
pub(crate) fn set_bits(bits: &mut [u64], off: u64, len: u64) {
    let mut i = off;
    let end = off + len;
    while i < end {
        let w = (i / 64) as usize;
        let b = i % 64;
        if b == 0 && end - i >= 64 {
            bits[w] = u64::MAX;
            i += 64;
        } else {
            bits[w] |= 1 << b;
            i += 1;
        }
    }
}

/// The first clear bit of `[off, off + len)`.
pub(crate) fn first_clear(bits: &[u64], off: u64, len: u64) -> Option<u64> {
    let mut i = off;
    let end = off + len;
    while i < end {
        let w = (i / 64) as usize;
        let b = i % 64;
        if b == 0 && end - i >= 64 {
            if bits[w] != u64::MAX {
                return Some(i + bits[w].trailing_ones() as u64);
            }
            i += 64;
        } else {
            if bits[w] & (1 << b) == 0 {
                return Some(i);
            }
            i += 1;
        }
    }
    None
}

/// Why a device address could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum AccessError {
    /// No allocation contains the range; `freed` when it lies in a freed allocation.
    OutOfBounds {
        nearest: Option<(u64, u64)>,
        freed: bool,
    },
}

/// All device allocations of the emulated GPU.
pub struct GlobalMemory {
    allocs: RwLock<BTreeMap<u64, Arc<Allocation>>>,
    next: AtomicU64,
    freed: Mutex<Vec<(u64, u64)>>,
    used: AtomicU64,
}

impl Default for GlobalMemory {
    fn default() -> Self {
        GlobalMemory {
            allocs: RwLock::default(),
            next: AtomicU64::new(GLOBAL_BASE),
            freed: Mutex::default(),
            used: AtomicU64::new(0),
        }
    }
}

impl GlobalMemory {
    /// Allocate `size` bytes (zero-filled but marked uninitialised) and return the address. The
    /// next allocation starts at least `max(64 KiB, size)` past this one's end.
    ///
    /// # Panics
    /// When the host is out of memory; [`GlobalMemory::try_alloc`] reports it instead.
    pub fn alloc(&self, size: u64) -> u64 {
        self.try_alloc(size)
            .unwrap_or_else(|| panic!("the host cannot hold a {size}-byte device allocation"))
    }

    /// Allocate `size` bytes, or None when the host cannot hold them.
    pub fn try_alloc(&self, size: u64) -> Option<u64> {
        let rounded = size.max(1).checked_next_multiple_of(ALLOC_ALIGN)?;
        let span = rounded.checked_add(GUARD.max(rounded))?;
        let base = self.next.fetch_add(span, Ordering::Relaxed);
        let alloc = Arc::new(Allocation::new(base, size)?);
        self.used.fetch_add(size, Ordering::Relaxed);
        self.allocs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(base, alloc);
        Some(base)
    }

    /// Free the allocation starting at `base`; false when there is none.
    pub fn free(&self, base: u64) -> bool {
        let removed = self
            .allocs
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&base);
        match removed {
            Some(a) => {
                self.used.fetch_sub(a.size, Ordering::Relaxed);
                let mut freed = self.freed.lock().unwrap_or_else(|e| e.into_inner());
                freed.push((a.base, a.size));
                if freed.len() > 4096 {
                    freed.drain(..2048);
                }
                true
            }
            None => false,
        }
    }

    /// Bytes currently allocated.
    pub fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// The allocation holding `[addr, addr + len)`.
    pub(crate) fn find(&self, addr: u64, len: u64) -> Result<Arc<Allocation>, AccessError> {
        let allocs = self.allocs.read().unwrap_or_else(|e| e.into_inner());
        if let Some((_, a)) = allocs.range(..=addr).next_back() {
            if a.contains(addr, len) {
                return Ok(a.clone());
            }
        }
        Err(self.describe_miss(&allocs, addr, len))
    }

    fn describe_miss(
        &self,
        allocs: &BTreeMap<u64, Arc<Allocation>>,
        addr: u64,
        len: u64,
    ) -> AccessError {
        let nearest = allocs
            .range(..=addr)
            .next_back()
            .map(|(_, a)| (a.base, a.size));
        let freed = self
            .freed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|&(b, s)| addr >= b && addr + len <= b + s);
        AccessError::OutOfBounds { nearest, freed }
    }

    /// A consistent list of the allocations (sorted by address) for one launch.
    pub(crate) fn snapshot(&self) -> Vec<Arc<Allocation>> {
        self.allocs
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// Describe why `[addr, addr + len)` is not accessible (for findings).
    pub(crate) fn explain(&self, addr: u64, len: u64) -> String {
        let allocs = self.allocs.read().unwrap_or_else(|e| e.into_inner());
        match self.describe_miss(&allocs, addr, len) {
            AccessError::OutOfBounds { freed: true, .. } => {
                "the address lies in a freed allocation".to_string()
            }
            AccessError::OutOfBounds {
                nearest: Some((b, s)),
                ..
            } if addr >= b && addr < b + s + GUARD => format!(
                "{} bytes past the end of the {}-byte allocation at {:#x}",
                addr + len - (b + s),
                s,
                b
            ),
            _ => "the address is in no allocation".to_string(),
        }
    }

    /// Copy host bytes to the device and mark them initialised.
    pub fn write(&self, addr: u64, src: &[u8]) -> Result<(), String> {
        let a = self
            .find(addr, src.len() as u64)
            .map_err(|_| self.explain(addr, src.len() as u64))?;
        let off = addr - a.base;
        // SAFETY: bounds checked by find; see Allocation's documentation.
        unsafe { a.bytes(off, src.len()) }.copy_from_slice(src);
        a.set_init(off, src.len() as u64);
        Ok(())
    }

    /// Copy device bytes to the host.
    pub fn read(&self, addr: u64, dst: &mut [u8]) -> Result<(), String> {
        let a = self
            .find(addr, dst.len() as u64)
            .map_err(|_| self.explain(addr, dst.len() as u64))?;
        // SAFETY: bounds checked by find.
        dst.copy_from_slice(unsafe { a.bytes(addr - a.base, dst.len()) });
        Ok(())
    }

    /// Fill `count` elements of `elem` bytes with the little-endian pattern `value`.
    pub fn fill(&self, addr: u64, value: u64, elem: usize, count: u64) -> Result<(), String> {
        let len = count * elem as u64;
        let a = self.find(addr, len).map_err(|_| self.explain(addr, len))?;
        let off = addr - a.base;
        // SAFETY: bounds checked by find.
        let bytes = unsafe { a.bytes(off, len as usize) };
        let pattern = value.to_le_bytes();
        if elem == 1 {
            bytes.fill(pattern[0]);
        } else {
            for chunk in bytes.chunks_exact_mut(elem) {
                chunk.copy_from_slice(&pattern[..elem]);
            }
        }
        a.set_init(off, len);
        Ok(())
    }

    /// Device-to-device copy (ranges may overlap), carrying the init bits.
    pub fn copy(&self, dst: u64, src: u64, len: u64) -> Result<(), String> {
        let s = self.find(src, len).map_err(|_| self.explain(src, len))?;
        let d = self.find(dst, len).map_err(|_| self.explain(dst, len))?;
        // SAFETY: both ranges were bounds checked by find; through raw pointers (no references that
        // could alias when source and destination are one allocation), and ptr::copy allows
        // overlapping ranges, as memmove.
        unsafe {
            let from = (*s.data.get()).as_ptr().add((src - s.base) as usize);
            let to = (*d.data.get()).as_mut_ptr().add((dst - d.base) as usize);
            std::ptr::copy(from, to, len as usize);
        }
        d.copy_init_from(dst - d.base, &s, src - s.base, len);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_have_guard_gaps_and_track_init() {
        let m = GlobalMemory::default();
        let a = m.alloc(100);
        let b = m.alloc(100);
        assert_eq!(a % ALLOC_ALIGN, 0);
        assert!(b >= a + 100 + GUARD);
        assert!(m.find(a + 100, 1).is_err());
        assert!(m.explain(a + 100, 4).contains("past the end"));
        m.write(a + 8, &[1, 2, 3]).unwrap();
        let al = m.find(a, 100).unwrap();
        assert_eq!(al.first_uninit(8, 3), None);
        assert_eq!(al.first_uninit(0, 20), Some(0));
        assert_eq!(al.first_uninit(9, 20), Some(11));
        assert!(m.free(a));
        assert!(m.explain(a, 4).contains("freed"));
    }

    /// Device-to-device copies (between allocations and overlapping within one, at every bit
    /// alignment) carry the bytes and init bits exactly as a byte-at-a-time memmove of a plain
    /// model does.
    #[test]
    fn copies_carry_bytes_and_init_bits_as_memmove() {
        const SIZE: usize = 300;
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
            | 1;
        eprintln!("seed {seed}");
        let mut state = seed;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n as u64) as usize
        };
        let m = GlobalMemory::default();
        let bases = [m.alloc(SIZE as u64), m.alloc(SIZE as u64)];
        // The model: each allocation's bytes and init flags.
        let mut model = [
            (vec![0u8; SIZE], vec![false; SIZE]),
            (vec![0u8; SIZE], vec![false; SIZE]),
        ];
        for case in 0..2000 {
            // Initialise a few random runs of each allocation with random bytes.
            for (a, &base) in bases.iter().enumerate() {
                for _ in 0..3 {
                    let off = next(SIZE);
                    let len = next(SIZE - off + 1);
                    let bytes: Vec<u8> = (0..len).map(|_| next(256) as u8).collect();
                    m.write(base + off as u64, &bytes).unwrap();
                    model[a].0[off..off + len].copy_from_slice(&bytes);
                    model[a].1[off..off + len].fill(true);
                }
            }
            let (from, to) = (next(2), next(2));
            let len = next(SIZE + 1);
            let (src, dst) = (next(SIZE - len + 1), next(SIZE - len + 1));
            m.copy(bases[to] + dst as u64, bases[from] + src as u64, len as u64)
                .unwrap();
            let copied = (
                model[from].0[src..src + len].to_vec(),
                model[from].1[src..src + len].to_vec(),
            );
            model[to].0[dst..dst + len].copy_from_slice(&copied.0);
            model[to].1[dst..dst + len].copy_from_slice(&copied.1);
            for (a, &base) in bases.iter().enumerate() {
                let mut got = vec![0u8; SIZE];
                m.read(base, &mut got).unwrap();
                assert_eq!(got, model[a].0, "case {case}, allocation {a}: bytes");
                let al = m.find(base, SIZE as u64).unwrap();
                for (i, &init) in model[a].1.iter().enumerate() {
                    assert_eq!(
                        al.first_uninit(i as u64, 1).is_none(),
                        init,
                        "case {case}, allocation {a}: init bit {i} after copying {len} bytes \
                         from {from}:{src} to {to}:{dst}"
                    );
                }
            }
        }
    }

    #[test]
    fn generic_windows_decode() {
        assert_eq!(decode_generic(SHARED_WINDOW + 16), Window::Shared(16));
        assert_eq!(
            decode_generic(0x7000_0000_0000),
            Window::Global(0x7000_0000_0000)
        );
    }
}
