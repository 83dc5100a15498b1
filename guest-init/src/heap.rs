//! The global allocator: a linked-list heap over the region the VMM reserved, behind a spin
//! lock (there is one vCPU and no interrupts, so the lock is never contended).

use core::alloc::{GlobalAlloc, Layout};
use core::ptr::{null_mut, NonNull};

use linked_list_allocator::Heap;
use spin::Mutex;

pub struct GuestHeap(Mutex<Heap>);

impl GuestHeap {
    pub const fn empty() -> GuestHeap {
        GuestHeap(Mutex::new(Heap::empty()))
    }

    /// # Safety
    /// `[start, start + size)` must be unused, writable memory owned by this heap from now on.
    pub unsafe fn init(&self, start: usize, size: usize) {
        // SAFETY: the caller hands over `[start, start + size)`, as `Heap::init` requires.
        unsafe { self.0.lock().init(start as *mut u8, size) };
    }
}

// SAFETY: `Heap` hands out each block of the region at most once, aligned and sized as the
// layout asks, until it is deallocated; the lock makes every call exclusive.
unsafe impl GlobalAlloc for GuestHeap {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        self.0
            .lock()
            .allocate_first_fit(layout)
            .map_or(null_mut(), |p| p.as_ptr())
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if let Some(p) = NonNull::new(ptr) {
            // SAFETY: `ptr` came from `alloc` with this layout.
            unsafe { self.0.lock().deallocate(p, layout) };
        }
    }
}
