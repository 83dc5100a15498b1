//! The few x86 instructions guest-init needs, all legal in ring 3 with IOPL 3.

use core::arch::asm;

use ember_wire::layout::{DOORBELL_KICK_PORT, DOORBELL_WAIT_PORT, POWER_OFF_PORT};

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O to the VMM's devices; IOPL 3 allows it in ring 3.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Writes a whole buffer to one port with a single `rep outsb`: one VM exit, not one per byte.
pub fn outsb(port: u16, bytes: &[u8]) {
    // SAFETY: reads `bytes.len()` bytes from a live slice; DF is clear (the VMM starts us
    // with it clear and nothing sets it).
    unsafe {
        asm!(
            "rep outsb",
            in("dx") port,
            inout("rsi") bytes.as_ptr() => _,
            inout("rcx") bytes.len() => _,
            options(nostack, readonly, preserves_flags)
        )
    };
}

/// Lets the VMM drain the TX queue, then continues.
pub fn kick() {
    outb(DOORBELL_KICK_PORT, 0);
}

/// Lets the VMM drain the TX queue and parks until it has delivered at least one packet.
pub fn kick_and_wait() {
    outb(DOORBELL_WAIT_PORT, 0);
}

pub fn power_off(code: u32) -> ! {
    loop {
        outl(POWER_OFF_PORT, code);
    }
}

/// The time-stamp counter (allowed in ring 3: the VMM leaves CR4.TSD clear).
pub fn rdtsc() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: rdtsc only reads the counter.
    unsafe {
        asm!("rdtsc", out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags))
    };
    (u64::from(hi) << 32) | u64::from(lo)
}

/// Current privilege level (the low bits of CS).
pub fn cpl() -> u8 {
    let cs: u16;
    // SAFETY: reading CS has no side effects.
    unsafe { asm!("mov {0:x}, cs", out(reg) cs, options(nomem, nostack, preserves_flags)) };
    (cs & 3) as u8
}

/// Executes an invalid instruction (test frames only).
pub fn invalid_opcode() -> ! {
    // SAFETY: raises #UD, which the VMM reports and turns into the end of this VM.
    unsafe { asm!("ud2", options(noreturn)) }
}

/// Touches an address that is not mapped (test frames only).
pub fn unmapped_read() -> ! {
    // SAFETY: raises #PF as intended; the read never completes.
    unsafe {
        core::ptr::read_volatile(0x10_0000_0000 as *const u8);
    }
    unreachable!("the read above faults")
}

/// Recurses until the stack runs into its guard page (test frames only). Linked in a
/// section of its own at a fixed offset in its page (see `link.ld`): under PVM its fault was
/// seen reported wrongly (a read of a page-table address at the start of a page, a triple
/// fault next to the fault stubs) depending on where other code changes moved it.
#[allow(unconditional_recursion)]
#[inline(never)]
#[link_section = ".ember_overflow"]
pub fn overflow_stack(depth: u64) -> u64 {
    let frame = core::hint::black_box([depth; 64]);
    overflow_stack(depth + 1) + frame[(depth % 64) as usize]
}

/// CPUID `leaf`/`subleaf` as the VMM configured it: `[eax, ebx, ecx, edx]` (test frames).
pub fn cpuid(leaf: u32, subleaf: u32) -> [u32; 4] {
    let r = core::arch::x86_64::__cpuid_count(leaf, subleaf);
    [r.eax, r.ebx, r.ecx, r.edx]
}
