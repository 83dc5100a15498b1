//! The boot-info block the VMM writes at [`crate::layout::BOOT_INFO`], and the header every
//! guest image starts with at [`crate::layout::IMAGE_BASE`].
//!
//! Both are fixed little-endian byte layouts rather than `repr(C)` structs, so neither side
//! depends on the other's compiler and a decoder can reject anything it does not know.

/// Magic of the boot-info block: "EMBRBOOT".
pub const BOOT_MAGIC: u64 = u64::from_le_bytes(*b"EMBRBOOT");
/// Magic at the start of a guest image: "EMBRGST1".
pub const IMAGE_MAGIC: u64 = u64::from_le_bytes(*b"EMBRGST1");
/// Version of the boot contract; bumped on any incompatible change.
pub const BOOT_VERSION: u32 = 2;
/// Number of ring-0 exception stubs an image provides (vectors 0..32).
pub const FAULT_VECTORS: usize = 32;
/// Distance between two exception stubs in the image.
pub const FAULT_STUB_STRIDE: u64 = 16;

/// Guest exit codes written to [`crate::layout::POWER_OFF_PORT`].
pub mod exit_code {
    /// Orderly shutdown requested by the host.
    pub const SHUTDOWN: u32 = 0;
    /// The guest panicked; the message is on the serial log.
    pub const PANIC: u32 = 1;
    /// The guest could not start (bad boot info, device missing).
    pub const BOOT_FAILED: u32 = 2;
}

/// Boot-info flags.
pub mod flags {
    /// Accept test-only frames (`Fault`, `Spin`) that let tests misbehave on purpose.
    pub const TEST_FRAMES: u32 = 1 << 0;
    /// Log boot progress on the serial port (each line costs one VM exit).
    pub const VERBOSE: u32 = 1 << 1;
}

/// What the guest learns about its machine at boot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootInfo {
    pub flags: u32,
    /// Bytes of guest RAM, starting at guest physical address 0.
    pub mem_size: u64,
    /// The heap the guest may use: `[heap_start, heap_end)`.
    pub heap_start: u64,
    pub heap_end: u64,
    /// Base of the virtio-mmio vsock device.
    pub vsock_mmio: u64,
    pub guest_cid: u64,
    /// TSC frequency, so the guest can turn `rdtsc` into time.
    pub tsc_khz: u64,
    /// Wall clock (ns since the Unix epoch) just before the guest's first instruction.
    pub boot_unix_ns: u64,
    /// Per-VM random seed from the host's CSPRNG.
    pub seed: [u8; 32],
}

/// Encoded size of [`BootInfo`].
pub const BOOT_INFO_SIZE: usize = 8 + 4 + 4 + 7 * 8 + 32;

/// Why a boot-info block or image header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootError {
    TooShort,
    BadMagic,
    UnsupportedVersion(u32),
    BadLayout,
}

impl core::fmt::Display for BootError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            BootError::TooShort => f.write_str("block too short"),
            BootError::BadMagic => f.write_str("bad magic"),
            BootError::UnsupportedVersion(v) => write!(f, "unsupported boot contract version {v}"),
            BootError::BadLayout => f.write_str("inconsistent memory layout"),
        }
    }
}

impl core::error::Error for BootError {}

impl BootInfo {
    pub fn encode(&self) -> [u8; BOOT_INFO_SIZE] {
        let mut out = [0u8; BOOT_INFO_SIZE];
        let mut w = Writer(&mut out, 0);
        w.u64(BOOT_MAGIC);
        w.u32(BOOT_VERSION);
        w.u32(self.flags);
        for v in [
            self.mem_size,
            self.heap_start,
            self.heap_end,
            self.vsock_mmio,
            self.guest_cid,
            self.tsc_khz,
            self.boot_unix_ns,
        ] {
            w.u64(v);
        }
        w.bytes(&self.seed);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BootError> {
        let mut r = Reader::new(bytes, BOOT_INFO_SIZE)?;
        if r.u64() != BOOT_MAGIC {
            return Err(BootError::BadMagic);
        }
        let version = r.u32();
        if version != BOOT_VERSION {
            return Err(BootError::UnsupportedVersion(version));
        }
        let info = BootInfo {
            flags: r.u32(),
            mem_size: r.u64(),
            heap_start: r.u64(),
            heap_end: r.u64(),
            vsock_mmio: r.u64(),
            guest_cid: r.u64(),
            tsc_khz: r.u64(),
            boot_unix_ns: r.u64(),
            seed: r.array(),
        };
        if info.heap_start >= info.heap_end || info.heap_end > info.mem_size {
            return Err(BootError::BadLayout);
        }
        Ok(info)
    }
}

/// The header at the start of a guest image: how the VMM finds the ring-0 fault stubs it
/// points the IDT at (the guest cannot load an IDT itself, it never runs in ring 0), and
/// what it needs to pre-warm a spare VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ImageHeader {
    /// Address of stub 0; stub `n` is at `fault_stubs + n * FAULT_STUB_STRIDE`.
    pub fault_stubs: u64,
    /// First byte after the image including `.bss`; the heap may start here.
    pub image_end: u64,
    /// A ring-3 routine that touches pages without changing memory: entered with `rdi` =
    /// first page, `rsi` = end, `rdx` = 0 to read or 1 to read-modify-write each page (the
    /// same byte is written back); it uses no stack and rings the kick doorbell when done.
    pub touch_pages: u64,
    /// First byte of the image's writable data (`.data`, `.bss`); below it are code and
    /// read-only data.
    pub data_start: u64,
}

/// Encoded size of [`ImageHeader`].
pub const IMAGE_HEADER_SIZE: usize = 48;

impl ImageHeader {
    pub fn encode(&self) -> [u8; IMAGE_HEADER_SIZE] {
        let mut out = [0u8; IMAGE_HEADER_SIZE];
        let mut w = Writer(&mut out, 0);
        w.u64(IMAGE_MAGIC);
        w.u32(BOOT_VERSION);
        w.u32(0);
        w.u64(self.fault_stubs);
        w.u64(self.image_end);
        w.u64(self.touch_pages);
        w.u64(self.data_start);
        out
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, BootError> {
        let mut r = Reader::new(bytes, IMAGE_HEADER_SIZE)?;
        if r.u64() != IMAGE_MAGIC {
            return Err(BootError::BadMagic);
        }
        let version = r.u32();
        if version != BOOT_VERSION {
            return Err(BootError::UnsupportedVersion(version));
        }
        let _reserved = r.u32();
        Ok(ImageHeader {
            fault_stubs: r.u64(),
            image_end: r.u64(),
            touch_pages: r.u64(),
            data_start: r.u64(),
        })
    }
}

struct Writer<'a>(&'a mut [u8], usize);

impl Writer<'_> {
    fn bytes(&mut self, b: &[u8]) {
        self.0[self.1..self.1 + b.len()].copy_from_slice(b);
        self.1 += b.len();
    }
    fn u32(&mut self, v: u32) {
        self.bytes(&v.to_le_bytes());
    }
    fn u64(&mut self, v: u64) {
        self.bytes(&v.to_le_bytes());
    }
}

/// Reads a fixed layout whose total size was checked up front, so the getters cannot fail.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], size: usize) -> Result<Self, BootError> {
        bytes.get(..size).map(Reader).ok_or(BootError::TooShort)
    }
    fn array<const N: usize>(&mut self) -> [u8; N] {
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        head.try_into().expect("split_at returned N bytes")
    }
    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.array())
    }
    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.array())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BootInfo {
        BootInfo {
            flags: flags::VERBOSE,
            mem_size: 16 << 20,
            heap_start: 0x40_0000,
            heap_end: (16 << 20) - 0x4_0000,
            vsock_mmio: 0xd000_0000,
            guest_cid: 3,
            tsc_khz: 2_000_000,
            boot_unix_ns: 1,
            seed: [7; 32],
        }
    }

    #[test]
    fn boot_info_round_trips() {
        let info = sample();
        assert_eq!(BootInfo::decode(&info.encode()), Ok(info));
    }

    #[test]
    fn boot_info_rejects_garbage() {
        let bytes = sample().encode();
        assert_eq!(BootInfo::decode(&bytes[..10]), Err(BootError::TooShort));
        let mut bad = bytes;
        bad[0] ^= 1;
        assert_eq!(BootInfo::decode(&bad), Err(BootError::BadMagic));
        let mut bad = bytes;
        bad[8] = 9;
        assert_eq!(
            BootInfo::decode(&bad),
            Err(BootError::UnsupportedVersion(9))
        );
        let mut info = sample();
        info.heap_end = info.mem_size + 1;
        assert_eq!(BootInfo::decode(&info.encode()), Err(BootError::BadLayout));
    }

    #[test]
    fn image_header_round_trips() {
        let h = ImageHeader {
            fault_stubs: 0x20_1000,
            image_end: 0x24_0000,
            touch_pages: 0x20_1200,
            data_start: 0x23_0000,
        };
        assert_eq!(ImageHeader::decode(&h.encode()), Ok(h));
        assert_eq!(
            ImageHeader::decode(&[0u8; IMAGE_HEADER_SIZE]),
            Err(BootError::BadMagic)
        );
    }
}
