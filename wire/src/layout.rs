//! Guest physical memory layout and I/O ports. Guest virtual addresses equal physical ones:
//! the VMM identity-maps the first 4 GiB before the first instruction runs.

/// The page at 0 is never mapped, so a null dereference faults.
pub const NULL_PAGE: u64 = 0x0;
/// GDT, TSS and IDT (supervisor-only).
pub const SYSTEM_TABLES: u64 = 0x1000;
/// The boot-info block (read-only for the guest).
pub const BOOT_INFO: u64 = 0x2000;
/// Ring-0 stack used only by the fault handlers (supervisor-only, one page).
pub const FAULT_STACK: u64 = 0x3000;
/// Page tables: PML4, PDPT, four PDs and two PTs, for the first and the last 2 MiB of RAM
/// (supervisor-only).
pub const PAGE_TABLES: u64 = 0x4000;
/// Where the guest image is linked and loaded; it begins with the image header (see the
/// `boot` module).
pub const IMAGE_BASE: u64 = 0x20_0000;
/// Size of the ring-3 stack at the top of guest memory. The page below it is left
/// unmapped, so an overflow faults instead of overwriting the heap.
pub const STACK_SIZE: u64 = 256 * 1024;
/// The unmapped guard page between the heap and the stack.
pub const STACK_GUARD: u64 = 4096;

/// The virtio-mmio window of the vsock device (one 4 KiB register page).
pub const VIRTIO_MMIO_BASE: u64 = 0xd000_0000;
pub const VIRTIO_MMIO_SIZE: u64 = 0x1000;
/// Guest RAM must end below the MMIO window.
pub const MAX_MEMORY: u64 = VIRTIO_MMIO_BASE;
/// Smallest guest the VMM accepts: the image (with its wasm engine, about 1.3 MiB above
/// the 2 MiB load address), a heap and the stack must fit.
pub const MIN_MEMORY: u64 = 8 * 1024 * 1024;

/// 16550 serial port (COM1) for the guest's own log.
pub const SERIAL_PORT: u16 = 0x3f8;
/// `out` here: the VMM processes the TX queue, then returns.
pub const DOORBELL_KICK_PORT: u16 = 0x510;
/// `out` here: the VMM processes the TX queue, then parks the vCPU until it has put at least
/// one packet in the RX queue (notify and wait in one exit).
pub const DOORBELL_WAIT_PORT: u16 = 0x511;
/// `out` here ends the VM; the value written is the guest's exit code (see the `boot`
/// module).
pub const POWER_OFF_PORT: u16 = 0x512;
/// Written by the ring-0 fault handler: `rdi` = vector, `rsi` = error code, `r8` = faulting RIP,
/// `r9` = RSP at the fault.
pub const FAULT_PORT: u16 = 0x513;

/// The vsock port guest-init listens on for the frame protocol.
pub const GUEST_FRAME_PORT: u32 = 52;
/// The well-known vsock CID of the host.
pub const HOST_CID: u64 = 2;
