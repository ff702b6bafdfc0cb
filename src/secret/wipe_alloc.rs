//! A global allocator that wipes every heap block before giving it back.
//!
//! The HTTP stack copies the `Authorization` header into buffers we do not own (hyper's
//! connection write buffer, header maps, TLS plaintext records). Those buffers are freed
//! without being cleared, so without this allocator a freed block can keep a copy of the key
//! for the rest of the process's life. Wiping on `dealloc` (and on the old block of a
//! `realloc`) means a copy lives only as long as the buffer that holds it.
//!
//! Part of the locked-memory layer: `unsafe` is allowed here, each block with its contract.
#![allow(unsafe_code)]

use std::alloc::{GlobalAlloc, Layout, System};

/// Install with `#[global_allocator] static A: WipingAllocator = WipingAllocator;`.
pub struct WipingAllocator;

/// Zeroes `len` bytes at `ptr` in a way the optimiser cannot drop as a dead store before free.
///
/// # Safety
/// `ptr` must be valid for writes of `len` bytes.
unsafe fn wipe(ptr: *mut u8, len: usize) {
    // SAFETY: guaranteed by the caller.
    unsafe { std::ptr::write_bytes(ptr, 0, len) };
    // The pointer escapes to an opaque function, so the zeroing must be kept.
    std::hint::black_box(ptr);
}

// SAFETY: every method forwards to `System` with the caller's layout; blocks are only zeroed
// while they are still owned (before `dealloc`), and `realloc` returns a block of the new
// layout holding the old contents, as `GlobalAlloc` requires.
unsafe impl GlobalAlloc for WipingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded contract.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` is a live block of `layout.size()` bytes owned by the caller.
        unsafe {
            wipe(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // System.realloc may move the block and free the old one unwiped, so move it here.
        // SAFETY: the caller guarantees `new_size` with `layout.align()` is a valid layout.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        // SAFETY: forwarded contract; the copy covers bytes valid in both blocks.
        unsafe {
            let new_ptr = System.alloc(new_layout);
            if !new_ptr.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, layout.size().min(new_size));
                wipe(ptr, layout.size());
                System.dealloc(ptr, layout);
            }
            new_ptr
        }
    }
}
