//! guest-init: the `no_std` guest of an ember micro-VM.
//!
//! It starts in ring 3 (the VMM prepared long mode, paging and the IDT), sets up its heap,
//! brings up the virtio-vsock device and then serves the frame protocol on
//! [`ember_wire::layout::GUEST_FRAME_PORT`]. It never executes a privileged instruction and
//! takes no interrupts: waiting for work is one doorbell exit that parks the vCPU.
#![no_std]

extern crate alloc;

pub mod arch;
pub mod clock;
pub mod heap;
pub mod runtime;
pub mod serial;
pub mod server;
pub mod virtio;
pub mod vsock;

use ember_wire::boot::{exit_code, flags, BootInfo};

/// Boots the guest from its boot-info block and serves frames until told to shut down.
pub fn run(boot_info: &[u8], heap: &heap::GuestHeap) -> ! {
    let info = match BootInfo::decode(boot_info) {
        Ok(info) => info,
        Err(e) => {
            log!("guest-init: bad boot info: {}", e);
            arch::power_off(exit_code::BOOT_FAILED)
        }
    };
    // SAFETY: the VMM reserved [heap_start, heap_end) for us and nothing else uses it.
    unsafe {
        heap.init(
            info.heap_start as usize,
            (info.heap_end - info.heap_start) as usize,
        )
    };
    let verbose = info.flags & flags::VERBOSE != 0;
    if verbose {
        log!(
            "guest-init {} booting: {} MiB, cpl {}",
            env!("CARGO_PKG_VERSION"),
            info.mem_size >> 20,
            arch::cpl()
        );
    }
    let device = match vsock::Vsock::new(&info) {
        Ok(d) => d,
        Err(e) => {
            log!("guest-init: vsock: {}", e);
            arch::power_off(exit_code::BOOT_FAILED)
        }
    };
    if verbose {
        log!(
            "guest-init ready on vsock port {}",
            ember_wire::layout::GUEST_FRAME_PORT
        );
    }
    server::Server::new(device, info).run()
}
