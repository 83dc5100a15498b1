//! guest-init's bare-metal entry: the image header, the ring-0 fault stubs, the panic
//! handler and the global allocator. Everything else is in the library.
#![no_std]
#![no_main]

use core::arch::global_asm;
use core::panic::PanicInfo;

use ember_wire::boot::{exit_code, BOOT_INFO_SIZE};
use guest_init::{arch, heap::GuestHeap, log};

#[global_allocator]
static HEAP: GuestHeap = GuestHeap::empty();

// The header host-vmm reads at IMAGE_BASE: magic "EMBRGST1", contract version, the address
// of the fault stubs, the end of the image, the page-touch routine and the start of the
// writable data.
global_asm!(
    ".section .ember_header, \"a\"",
    ".quad 0x3154534752424d45",
    ".long {version}",
    ".long 0",
    ".quad ember_fault_stubs",
    ".quad __image_end",
    ".quad ember_touch_pages",
    ".quad __data_start",
    version = const ember_wire::boot::BOOT_VERSION,
);

// Touches the pages [rdi, rsi): reads each one (rdx = 0) or adds 0 to its first byte
// (rdx = 1, one write fault that leaves memory as it was), then rings the kick doorbell.
// The VMM runs it in a spare VM so that KVM maps those pages before a function needs them
// (under PVM each first touch costs a shadow-paging fault); it then restores the registers.
// No stack, no other memory: a warmed VM's memory is byte for byte its template's.
global_asm!(
    ".section .text.ember_touch, \"ax\"",
    ".global ember_touch_pages",
    "ember_touch_pages:",
    "1: cmp rdi, rsi",
    "jae 3f",
    "test rdx, rdx",
    "jz 2f",
    "add byte ptr [rdi], 0",
    "jmp 4f",
    "2: mov al, byte ptr [rdi]",
    "4: add rdi, 4096",
    "jmp 1b",
    "3: mov dx, {port}",
    "out dx, al",
    "ud2",
    port = const ember_wire::layout::DOORBELL_KICK_PORT,
);

// Ring-0 exception stubs, 16 bytes apart, one per vector 0..32. The CPU enters them on the
// TSS's ring-0 stack. They report vector (rdi), error code (rsi), faulting RIP (r8) and RSP (r9) with
// one port write; the host then ends the VM. Kept tiny: ring-0 code is emulated under PVM.
global_asm!(
    ".section .text.ember_fault, \"ax\"",
    ".balign 16",
    ".global ember_fault_stubs",
    "ember_fault_stubs:",
    ".irp v, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31",
    ".balign 16",
    "push \\v",
    "jmp ember_fault_common",
    ".endr",
    "ember_fault_common:",
    "pop rdi",
    // Vectors 8, 10-14, 17, 21, 29 and 30 push an error code.
    "mov eax, 0x60227d00",
    "bt eax, edi",
    "jnc 1f",
    "pop rsi",
    "jmp 2f",
    "1: xor esi, esi",
    "2: mov r8, [rsp]",
    "mov r9, [rsp + 24]",
    "mov dx, {port}",
    "out dx, al",
    "3: hlt",
    "jmp 3b",
    port = const ember_wire::layout::FAULT_PORT,
);

/// The VMM enters here in ring 3 with `rdi` pointing at the boot-info block.
#[unsafe(no_mangle)]
extern "C" fn _start(boot_info: *const u8) -> ! {
    // SAFETY: the VMM maps BOOT_INFO_SIZE readable bytes at `boot_info`.
    let raw = unsafe { core::slice::from_raw_parts(boot_info, BOOT_INFO_SIZE) };
    guest_init::run(raw, &HEAP)
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    log!("panic: {}", info);
    arch::power_off(exit_code::PANIC)
}
