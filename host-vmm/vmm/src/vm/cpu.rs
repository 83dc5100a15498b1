//! Everything a vCPU needs to start directly in 64-bit ring 3: identity-mapped page tables,
//! GDT/TSS/IDT, control registers, SSE, and a TSS I/O bitmap for port-I/O doorbells.
//!
//! On KVM through PVM, ring-0 guest code is emulated (thousands of times slower), so the
//! host does all privileged setup and the guest never needs to execute a privileged
//! instruction. Ring 0 is entered only through the IDT, to report a fault.

use ember_wire::boot::{FAULT_STUB_STRIDE, FAULT_VECTORS};
use ember_wire::layout::{
    BOOT_INFO, DOORBELL_KICK_PORT, FAULT_STACK, NULL_PAGE, PAGE_TABLES, POWER_OFF_PORT,
    SERIAL_PORT, SYSTEM_TABLES, VIRTIO_MMIO_BASE,
};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_segment, kvm_sregs};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::memory::GuestMemory;

/// The system tables did not fit in guest memory.
#[derive(Debug, thiserror::Error)]
#[error("writing system tables at {addr:#x}: {source}")]
pub struct TablesError {
    addr: u64,
    source: GuestMemoryError,
}

const PTE_PRESENT: u64 = 1 << 0;
const PTE_WRITABLE: u64 = 1 << 1;
const PTE_USER: u64 = 1 << 2;
const PTE_HUGE: u64 = 1 << 7;
const HUGE_PAGE: u64 = 2 << 20;

const PML4: u64 = PAGE_TABLES;
const PDPT: u64 = PAGE_TABLES + 0x1000;
/// Four page directories of 2 MiB pages: the whole low 4 GiB (RAM and the MMIO window).
const PD: u64 = PAGE_TABLES + 0x2000;
const PD_COUNT: u64 = 4;
/// 4 KiB page table for the first 2 MiB, so system pages can be supervisor-only.
const PT_LOW: u64 = PD + PD_COUNT * 0x1000;
/// 4 KiB page table for the last 2 MiB, so the stack can have a guard page.
const PT_HIGH: u64 = PT_LOW + 0x1000;
/// First byte after the page tables.
pub const PAGE_TABLES_END: u64 = PT_HIGH + 0x1000;

const GDT: u64 = SYSTEM_TABLES;
const TSS: u64 = SYSTEM_TABLES + 0x80;
const TSS_SIZE: u64 = 104;
/// Ports the guest may use (the power-off port takes a 32-bit write), and the I/O bitmap
/// bytes that cover them plus the 0xff byte the CPU requires after the bitmap.
const GUEST_PORTS: [std::ops::Range<u16>; 2] = [
    SERIAL_PORT..SERIAL_PORT + 8,
    DOORBELL_KICK_PORT..POWER_OFF_PORT + 4,
];
const IO_BITMAP_BYTES: usize = (POWER_OFF_PORT as usize + 4) / 8 + 2;
const IDT: u64 = SYSTEM_TABLES + 0x200;

const KERNEL_CS: u16 = 0x08;
const USER_DS: u16 = 0x18 | 3;
const USER_CS: u16 = 0x20 | 3;
const TSS_SEL: u16 = 0x28;

const CR0_PE: u64 = 1 << 0;
const CR0_MP: u64 = 1 << 1;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_WP: u64 = 1 << 16;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const CR4_OSFXSR: u64 = 1 << 9;
const CR4_OSXMMEXCPT: u64 = 1 << 10;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;
const EFER_NXE: u64 = 1 << 11;
const RFLAGS_RESERVED: u64 = 1 << 1;

/// Where the vCPU starts.
pub struct Entry {
    pub rip: u64,
    pub rsp: u64,
    /// First argument (`rdi`) of the guest's entry function.
    pub arg: u64,
}

/// Writes page tables, GDT, TSS and IDT into guest memory. Without `fault_stubs` (the KVM
/// floor measurement) the IDT is empty and any fault triple-faults.
///
/// Only RAM and the virtio-mmio window are mapped, so a stray access anywhere else is a
/// page fault the guest reports rather than an MMIO exit. Tables are built on the host and
/// copied in with one write per region.
pub fn write_system_tables(
    mem: &GuestMemory,
    mem_size: u64,
    fault_stubs: Option<u64>,
) -> Result<(), TablesError> {
    let table = PTE_PRESENT | PTE_WRITABLE | PTE_USER;
    let entries = ((PAGE_TABLES_END - PAGE_TABLES) / 8) as usize;
    let mut pt = vec![0u64; entries];
    let mut set = |addr: u64, value: u64| pt[((addr - PAGE_TABLES) / 8) as usize] = value;
    set(PML4, PDPT | table);
    for gib in 0..PD_COUNT {
        set(PDPT + gib * 8, (PD + gib * 0x1000) | table);
    }
    set(PD, PT_LOW | table);
    for page in (HUGE_PAGE..mem_size).step_by(HUGE_PAGE as usize) {
        set(PD + (page / HUGE_PAGE) * 8, page | table | PTE_HUGE);
    }
    set(
        PD + (VIRTIO_MMIO_BASE / HUGE_PAGE) * 8,
        VIRTIO_MMIO_BASE | table | PTE_HUGE,
    );
    for addr in (0..HUGE_PAGE.min(mem_size)).step_by(4096) {
        let flags = match addr {
            NULL_PAGE => 0,
            BOOT_INFO => PTE_PRESENT | PTE_USER,
            a if a < PAGE_TABLES_END => PTE_PRESENT | PTE_WRITABLE,
            _ => table,
        };
        set(PT_LOW + (addr / 4096) * 8, addr | flags);
    }
    let bytes: Vec<u8> = pt.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, PAGE_TABLES, &bytes)?;

    let mut sys = [0u8; 0x1000];
    let mut put = |addr: u64, value: u64| {
        let at = (addr - SYSTEM_TABLES) as usize;
        sys[at..at + 8].copy_from_slice(&value.to_le_bytes());
    };
    // GDT: null, kernel code, kernel data, user data, user code, 16-byte TSS descriptor.
    let gdt = [
        0u64,
        0x00af_9b00_0000_ffff,
        0x00cf_9300_0000_ffff,
        0x00cf_f300_0000_ffff,
        0x00af_fb00_0000_ffff,
    ];
    for (i, entry) in gdt.iter().enumerate() {
        put(GDT + i as u64 * 8, *entry);
    }
    let tss_limit = TSS_SIZE + IO_BITMAP_BYTES as u64 - 1;
    let (tss_lo, tss_hi) = system_descriptor(TSS, tss_limit, 0x89);
    put(GDT + 5 * 8, tss_lo);
    put(GDT + 6 * 8, tss_hi);
    // TSS: RSP0 (offset 4) is the fault stack. The I/O permission bitmap (at offset 104)
    // opens exactly the ports of our devices to ring 3; ports past the TSS limit are closed.
    put(TSS + 4, FAULT_STACK + 0x1000);
    put(TSS + 96, TSS_SIZE << 48);
    if let Some(stubs) = fault_stubs {
        for vector in 0..FAULT_VECTORS as u64 {
            let (lo, hi) = interrupt_gate(stubs + vector * FAULT_STUB_STRIDE);
            put(IDT + vector * 16, lo);
            put(IDT + vector * 16 + 8, hi);
        }
    }
    let bitmap = (TSS + TSS_SIZE - SYSTEM_TABLES) as usize;
    sys[bitmap..bitmap + IO_BITMAP_BYTES].fill(0xff);
    for port in GUEST_PORTS.into_iter().flatten() {
        sys[bitmap + port as usize / 8] &= !(1 << (port % 8));
    }
    write(mem, SYSTEM_TABLES, &sys)
}

fn write(mem: &GuestMemory, addr: u64, bytes: &[u8]) -> Result<(), TablesError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| TablesError { addr, source })
}

/// A 64-bit system-segment descriptor (TSS) as two GDT slots.
fn system_descriptor(base: u64, limit: u64, access: u64) -> (u64, u64) {
    let lo = (limit & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (access << 40)
        | (((limit >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (lo, base >> 32)
}

/// A present, DPL-0 64-bit interrupt gate to `handler` in the kernel code segment.
fn interrupt_gate(handler: u64) -> (u64, u64) {
    let lo = (handler & 0xffff)
        | ((KERNEL_CS as u64) << 16)
        | (0x8e << 40)
        | (((handler >> 16) & 0xffff) << 48);
    (lo, handler >> 32)
}

fn segment(selector: u16, code: bool) -> kvm_segment {
    kvm_segment {
        base: 0,
        limit: 0xffff_ffff,
        selector,
        type_: if code { 0xb } else { 0x3 },
        present: 1,
        dpl: (selector & 3) as u8,
        db: u8::from(!code),
        s: 1,
        l: u8::from(code),
        g: 1,
        avl: 0,
        unusable: 0,
        padding: 0,
    }
}

/// The type TR's cached descriptor gets: a busy 64-bit TSS (11) on Intel, where VMX's
/// guest-state checks require it, and an available one (9) on AMD, where SVM checks
/// nothing: an emulated CPU (QEMU's TCG, which nests SVM for a worker image tested in QEMU)
/// honours the TSS I/O bitmap only for the available type its own `ltr` leaves cached, and
/// raised #GP on the guest's first doorbell with a busy one.
pub(crate) fn tss_type() -> u8 {
    let vendor = std::arch::x86_64::__cpuid(0);
    // "AuthenticAMD" in EBX, EDX, ECX.
    let amd = vendor.ebx == u32::from_le_bytes(*b"Auth")
        && vendor.edx == u32::from_le_bytes(*b"enti")
        && vendor.ecx == u32::from_le_bytes(*b"cAMD");
    if amd {
        0x9
    } else {
        0xb
    }
}

/// Special registers for 64-bit ring 3 with paging on.
pub fn sregs(mut sregs: kvm_sregs, fault_stubs: bool) -> kvm_sregs {
    let data = segment(USER_DS, false);
    sregs.cs = segment(USER_CS, true);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = kvm_segment {
        base: TSS,
        limit: (TSS_SIZE + IO_BITMAP_BYTES as u64 - 1) as u32,
        selector: TSS_SEL,
        type_: tss_type(),
        present: 1,
        s: 0,
        ..Default::default()
    };
    sregs.ldt = kvm_segment {
        unusable: 1,
        ..Default::default()
    };
    sregs.gdt.base = GDT;
    sregs.gdt.limit = 7 * 8 - 1;
    sregs.idt.base = IDT;
    sregs.idt.limit = if fault_stubs {
        (FAULT_VECTORS * 16 - 1) as u16
    } else {
        0
    };
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG;
    sregs.cr3 = PML4;
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT;
    sregs.efer = EFER_LME | EFER_LMA | EFER_NXE;
    sregs
}

/// General registers at entry: IOPL 0 (ports are opened by the TSS bitmap instead, which
/// PVM honours), interrupts off (the guest takes none).
pub fn regs(entry: &Entry) -> kvm_regs {
    kvm_regs {
        rip: entry.rip,
        rsp: entry.rsp,
        rdi: entry.arg,
        rflags: RFLAGS_RESERVED,
        ..Default::default()
    }
}

/// x87 and SSE control words at their power-on defaults with all exceptions masked.
pub fn fpu() -> kvm_fpu {
    kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptors_encode_known_values() {
        // A TSS at 0x1080, limit 103, type 0x89 (available 64-bit TSS, present).
        let (lo, hi) = system_descriptor(0x1080, 103, 0x89);
        assert_eq!(lo, 0x0000_8900_1080_0067);
        assert_eq!(hi, 0);
        let (lo, hi) = interrupt_gate(0x1234_5678_9abc);
        assert_eq!(lo & 0xffff, 0x9abc);
        assert_eq!((lo >> 16) & 0xffff, KERNEL_CS as u64);
        assert_eq!((lo >> 48) & 0xffff, 0x5678);
        assert_eq!(hi, 0x1234);
    }
}
