//! A global allocator that puts large buffers on cache-line boundaries.
//!
//! The AMX GEMM loads its weights as rows of 64 bytes. glibc's `malloc` returns large blocks 16 bytes
//! past a page boundary, so every such row of a `Vec<bf16>` of weights straddles two cache lines,
//! and the prefill GEMMs run ~15-20% slower than on aligned weights (perf/NOTES.md, "Step
//! 9"). PyTorch aligns every CPU tensor to 64 bytes. A program that runs the CPU backend can
//! do the same for its large buffers with
//!
//! ```
//! #[global_allocator]
//! static ALLOC: moe_kernels::cpu::LineAligned = moe_kernels::cpu::LineAligned;
//! ```
//!
//! as the `moe` command does. The results are the same bits either way: only the speed changes.

use std::alloc::{GlobalAlloc, Layout, System};

/// The [`System`] allocator, with every allocation of at least [`LineAligned::LARGE`] bytes aligned
/// to 64 bytes (see the module docs).
#[derive(Clone, Copy, Debug, Default)]
pub struct LineAligned;

impl LineAligned {
    /// Bytes from which an allocation is aligned to a cache line.
    pub const LARGE: usize = 64 << 10;

    /// The layout `layout` is allocated with: the same size, aligned to a cache line when large (a
    /// function of `layout` alone, so that `dealloc` frees with the layout `alloc` used).
    fn system_layout(layout: Layout) -> Layout {
        if layout.size() < Self::LARGE {
            return layout;
        }
        layout.align_to(super::CACHE_LINE).unwrap_or(layout)
    }
}

// SAFETY: every method passes to `System` the layout from `system_layout`, which has the caller's
// size and at least its alignment, and frees and reallocates each block with the layout it was
// allocated with (`system_layout` of the caller's layout, which the `GlobalAlloc` contract makes the
// same at allocation and at deallocation).
unsafe impl GlobalAlloc for LineAligned {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: `layout` has a non-zero size (caller), and so has the system layout.
        unsafe { System.alloc(Self::system_layout(layout)) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as in `alloc`.
        unsafe { System.alloc_zeroed(Self::system_layout(layout)) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by this allocator with `layout` (caller), so by `System` with
        // its system layout.
        unsafe { System.dealloc(ptr, Self::system_layout(layout)) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let old = Self::system_layout(layout);
        // SAFETY: `new_size` rounded up to `layout`'s alignment does not overflow `isize` (caller).
        let new = Self::system_layout(unsafe {
            Layout::from_size_align_unchecked(new_size, layout.align())
        });
        if old.align() == new.align() {
            // SAFETY: `ptr` was allocated by `System` with `old` (as in `dealloc`); `new_size` is
            // non-zero and valid for its alignment (caller).
            return unsafe { System.realloc(ptr, old, new_size) };
        }
        // The block crosses `LARGE`: a new block with the other alignment, the contents moved.
        // SAFETY: `new` has a non-zero size; both blocks hold at least the bytes copied; `ptr` is
        // freed with the layout it was allocated with.
        unsafe {
            let moved = System.alloc(new);
            if !moved.is_null() {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                System.dealloc(ptr, old);
            }
            moved
        }
    }
}

#[cfg(test)]
mod tests {
    use super::LineAligned;
    use std::alloc::{GlobalAlloc, Layout};

    /// `len` bytes at `p`, numbered from `from`.
    fn fill(p: *mut u8, len: usize, from: usize) {
        for i in 0..len {
            // SAFETY: the caller's block holds `len` bytes.
            unsafe { *p.add(i) = (from + i) as u8 };
        }
    }

    /// Whether the `len` bytes at `p` are numbered from `from`.
    fn holds(p: *const u8, len: usize, from: usize) -> bool {
        // SAFETY: the caller's block holds `len` bytes.
        (0..len).all(|i| unsafe { *p.add(i) } == (from + i) as u8)
    }

    #[test]
    fn large_blocks_are_line_aligned_and_keep_their_bytes() {
        let a = LineAligned;
        let large = LineAligned::LARGE;
        // SAFETY: every block is used within its size and freed with its current layout.
        unsafe {
            let small = Layout::from_size_align(100, 2).unwrap();
            let p = a.alloc(small);
            assert!(!p.is_null());
            fill(p, 100, 7);
            // Small to large, large to larger, large to small: aligned exactly when large, the
            // bytes kept each time.
            let p = a.realloc(p, small, large + 3);
            assert_eq!(p as usize % 64, 0, "grown past LARGE: not aligned");
            assert!(holds(p, 100, 7));
            fill(p, large + 3, 11);
            let layout = Layout::from_size_align(large + 3, 2).unwrap();
            let p = a.realloc(p, layout, 4 * large);
            assert_eq!(p as usize % 64, 0, "grown large block: not aligned");
            assert!(holds(p, large + 3, 11));
            let layout = Layout::from_size_align(4 * large, 2).unwrap();
            let p = a.realloc(p, layout, 50);
            assert!(holds(p, 50, 11));
            a.dealloc(p, Layout::from_size_align(50, 2).unwrap());
            for size in [large, 3 * large + 1] {
                let layout = Layout::from_size_align(size, 1).unwrap();
                let z = a.alloc_zeroed(layout);
                assert_eq!(z as usize % 64, 0, "{size} bytes: not aligned");
                assert!((0..size).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout);
            }
        }
    }
}
