//! Huge pages under the expert weights.
//!
//! The expert GEMMs stream gigabytes of weights that are read again at every forward. Behind 4 KB
//! pages a core walks the page tables every 4 KB of that stream (and, in a virtual machine, walks two
//! sets of them), which caps the rate at which one core reads memory well below what it reaches behind
//! 2 MB pages (perf/NOTES.md, "Step 8"). Linux gives huge pages to anonymous
//! memory that asks for them (`madvise(MADV_HUGEPAGE)`) when transparent huge pages are in
//! `madvise` mode, its usual default, and `MADV_COLLAPSE` (Linux 6.1) moves memory already written
//! onto huge pages at once, its contents unchanged.
//!
//! [`advise`] asks for both on the whole huge pages inside a buffer. It is advice: where the system
//! has no transparent huge pages, or refuses, nothing changes, and the weights read the same either
//! way.

/// Ask the system to back the whole huge pages inside `data` with huge pages, now (see the module
/// docs). Does nothing on other systems than Linux, where transparent huge pages are disabled, and for
/// buffers that hold no whole huge page.
pub(crate) fn advise<T>(data: &[T]) {
    #[cfg(target_os = "linux")]
    linux::advise(data.as_ptr().cast(), std::mem::size_of_val(data));
    #[cfg(not(target_os = "linux"))]
    let _ = data;
}

#[cfg(target_os = "linux")]
mod linux {
    use std::sync::OnceLock;

    /// `MADV_COLLAPSE`, Linux's value for every architecture (`asm-generic/mman-common.h`; the
    /// `libc` crate exports it for glibc targets only).
    const MADV_COLLAPSE: libc::c_int = 25;

    /// The size of a transparent huge page, or `None` where the kernel has none (or they are off).
    fn huge_page_size() -> Option<usize> {
        static SIZE: OnceLock<Option<usize>> = OnceLock::new();
        *SIZE.get_or_init(|| {
            let thp = "/sys/kernel/mm/transparent_hugepage";
            let enabled = std::fs::read_to_string(format!("{thp}/enabled")).ok()?;
            if enabled.contains("[never]") {
                return None;
            }
            let size = std::fs::read_to_string(format!("{thp}/hpage_pmd_size")).ok()?;
            size.trim()
                .parse()
                .ok()
                .filter(|&s: &usize| s.is_power_of_two())
        })
    }

    /// [`super::advise`] on the `len` bytes at `ptr`.
    pub(super) fn advise(ptr: *const u8, len: usize) {
        let Some(huge) = huge_page_size() else {
            return;
        };
        let start = (ptr as usize).next_multiple_of(huge);
        let end = (ptr as usize + len) / huge * huge;
        if end <= start {
            return;
        }
        for advice in [libc::MADV_HUGEPAGE, MADV_COLLAPSE] {
            // SAFETY: `start..end` lies inside the caller's buffer, whole pages of memory this process
            // has mapped; these two advices change which pages back the memory, never its contents
            // (`MADV_COLLAPSE` copies them onto the huge page). The results are ignored: refused advice
            // leaves the memory as it was.
            unsafe { libc::madvise(start as *mut libc::c_void, end - start, advice) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::advise;

    #[test]
    fn advice_keeps_the_values() {
        // Buffers holding whole huge pages, none, and at odd offsets: the values read back the same
        // after the advice (on a system with transparent huge pages, after `MADV_COLLAPSE` moved
        // them).
        let seed = 0x2545_f491_4f6c_dd1d_u64;
        eprintln!("seed {seed:#x}");
        let mut x = seed;
        let data: Vec<u64> = (0..(9 << 20) / 8)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            })
            .collect();
        let before = data.clone();
        for range in [0..data.len(), 3..data.len() - 5, 0..100, 0..0] {
            advise(&data[range]);
            assert!(data == before, "advice changed the values");
        }
    }
}
