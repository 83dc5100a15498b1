//! A minimal virtio-mmio driver: device bring-up and split virtqueues, from ring 3 without
//! interrupts. Each MMIO access is a VM exit, so bring-up touches only the registers the
//! spec needs (a fresh device is already in reset state; its config comes from boot info).

use alloc::alloc::{alloc, Layout};
use alloc::vec::Vec;
use core::ptr::{read_volatile, write_volatile};
use core::sync::atomic::{fence, Ordering};

use ember_wire::virtio::mmio as reg;

const STATUS_ACK_DRIVER: u32 = 1 | 2;
const STATUS_DRIVER_OK: u32 = 4;
const STATUS_FEATURES_OK: u32 = 8;
/// VIRTIO_F_VERSION_1 is bit 32: bit 0 of feature word 1.
const FEATURE_VERSION_1_HI: u32 = 1;

pub struct Mmio {
    base: usize,
}

impl Mmio {
    fn read(&self, offset: u64) -> u32 {
        // SAFETY: the VMM maps the device's register page at `base`.
        unsafe { read_volatile((self.base + offset as usize) as *const u32) }
    }

    fn write(&self, offset: u64, value: u32) {
        // SAFETY: as `read`.
        unsafe { write_volatile((self.base + offset as usize) as *mut u32, value) }
    }

    /// Checks the device and negotiates features (VERSION_1 only).
    pub fn probe(base: u64, device_id: u32) -> Result<Mmio, &'static str> {
        let mmio = Mmio {
            base: base as usize,
        };
        if mmio.read(reg::MAGIC_VALUE) != reg::MAGIC || mmio.read(reg::VERSION) != 2 {
            return Err("no virtio-mmio v2 device");
        }
        if mmio.read(reg::DEVICE_ID) != device_id {
            return Err("unexpected virtio device type");
        }
        mmio.write(reg::STATUS, STATUS_ACK_DRIVER);
        mmio.write(reg::DEVICE_FEATURES_SEL, 1);
        if mmio.read(reg::DEVICE_FEATURES) & FEATURE_VERSION_1_HI == 0 {
            return Err("device does not offer VIRTIO_F_VERSION_1");
        }
        mmio.write(reg::DRIVER_FEATURES_SEL, 1);
        mmio.write(reg::DRIVER_FEATURES, FEATURE_VERSION_1_HI);
        mmio.write(reg::STATUS, STATUS_ACK_DRIVER | STATUS_FEATURES_OK);
        if mmio.read(reg::STATUS) & STATUS_FEATURES_OK == 0 {
            return Err("device rejected our features");
        }
        Ok(mmio)
    }

    /// Hands queue `index` to the device.
    pub fn setup_queue(&self, index: u32, queue: &VirtQueue) -> Result<(), &'static str> {
        self.write(reg::QUEUE_SEL, index);
        if self.read(reg::QUEUE_NUM_MAX) < u32::from(queue.size) {
            return Err("virtqueue larger than the device allows");
        }
        self.write(reg::QUEUE_NUM, u32::from(queue.size));
        // Our memory is below 4 GiB, so the high halves keep their reset value of 0.
        self.write(reg::QUEUE_DESC_LOW, queue.desc as u32);
        self.write(reg::QUEUE_DRIVER_LOW, queue.avail as u32);
        self.write(reg::QUEUE_DEVICE_LOW, queue.used as u32);
        self.write(reg::QUEUE_READY, 1);
        Ok(())
    }

    pub fn driver_ok(&self) {
        self.write(
            reg::STATUS,
            STATUS_ACK_DRIVER | STATUS_FEATURES_OK | STATUS_DRIVER_OK,
        );
    }
}

const DESC_F_NEXT: u16 = 1;
pub const DESC_F_WRITE: u16 = 2;

/// A split virtqueue in guest memory.
pub struct VirtQueue {
    size: u16,
    desc: usize,
    avail: usize,
    used: usize,
    free: Vec<u16>,
    avail_idx: u16,
    last_used: u16,
}

/// One buffer of a chain: guest address, length, flags (`DESC_F_WRITE` for device-writable).
pub type Buffer = (u64, u32, u16);

impl VirtQueue {
    /// Allocates the three rings in one block (a single page for small queues): every page
    /// the guest touches first costs a shadow-paging fault under PVM, so boot touches few.
    pub fn new(size: u16) -> VirtQueue {
        let n = size as usize;
        let avail_off = 16 * n;
        let used_off = (avail_off + 6 + 2 * n).next_multiple_of(4);
        let bytes = used_off + 6 + 8 * n;
        let layout = Layout::from_size_align(bytes, 16).expect("valid queue layout");
        // SAFETY: non-zero size; the rings live as long as the VM.
        let base = unsafe { alloc(layout) } as usize;
        assert!(base != 0, "out of memory for virtqueues");
        let queue = VirtQueue {
            size,
            desc: base,
            avail: base + avail_off,
            used: base + used_off,
            free: (0..size).rev().collect(),
            avail_idx: 0,
            last_used: 0,
        };
        // Descriptors are written before they are offered; only the ring headers need zeros.
        // SAFETY: both headers lie inside the block allocated above.
        unsafe {
            write_volatile(queue.avail as *mut u32, 0);
            write_volatile(queue.used as *mut u32, 0);
        }
        queue
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    pub fn free_descriptors(&self) -> usize {
        self.free.len()
    }

    /// The descriptor index the next `add` will use as its head.
    pub fn next_head(&self) -> Option<u16> {
        self.free.last().copied()
    }

    /// Adds a chain and makes it visible to the device; returns its head index.
    pub fn add(&mut self, buffers: &[Buffer]) -> Option<u16> {
        if buffers.is_empty() || buffers.len() > self.free.len() {
            return None;
        }
        let ids: Vec<u16> = (0..buffers.len())
            .map(|_| self.free.pop().unwrap())
            .collect();
        for (i, &(addr, len, flags)) in buffers.iter().enumerate() {
            let next = ids.get(i + 1).copied();
            let flags = flags | if next.is_some() { DESC_F_NEXT } else { 0 };
            let d = self.desc + 16 * ids[i] as usize;
            // SAFETY: `d` is descriptor `ids[i]` of our table.
            unsafe {
                write_volatile(d as *mut u64, addr);
                write_volatile((d + 8) as *mut u32, len);
                write_volatile((d + 12) as *mut u16, flags);
                write_volatile((d + 14) as *mut u16, next.unwrap_or(0));
            }
        }
        let slot = self.avail + 4 + 2 * (self.avail_idx % self.size) as usize;
        // SAFETY: `slot` is inside the avail ring.
        unsafe { write_volatile(slot as *mut u16, ids[0]) };
        self.avail_idx = self.avail_idx.wrapping_add(1);
        fence(Ordering::Release);
        // SAFETY: the avail ring's idx field.
        unsafe { write_volatile((self.avail + 2) as *mut u16, self.avail_idx) };
        Some(ids[0])
    }

    /// Test only (hostile mode): offers more chains than the ring holds, which no device
    /// may accept.
    pub fn offer_impossible(&mut self) {
        let idx = self.avail_idx.wrapping_add(self.size).wrapping_add(1);
        fence(Ordering::Release);
        // SAFETY: the avail ring's idx field.
        unsafe { write_volatile((self.avail + 2) as *mut u16, idx) };
    }

    /// Takes one completed chain: its head index and the length the device wrote.
    /// The chain's descriptors become free again.
    pub fn pop_used(&mut self) -> Option<(u16, u32)> {
        // SAFETY: the used ring's idx field.
        let used_idx = unsafe { read_volatile((self.used + 2) as *const u16) };
        if used_idx == self.last_used {
            return None;
        }
        fence(Ordering::Acquire);
        let elem = self.used + 4 + 8 * (self.last_used % self.size) as usize;
        // SAFETY: `elem` is inside the used ring.
        let (id, len) = unsafe {
            (
                read_volatile(elem as *const u32),
                read_volatile((elem + 4) as *const u32),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        // The device is the VMM, but still: never follow an index it made up.
        let mut id = u16::try_from(id).ok().filter(|i| *i < self.size)?;
        let head = id;
        for _ in 0..self.size {
            let d = self.desc + 16 * id as usize;
            // SAFETY: `d` is a descriptor of our table.
            let (flags, next) = unsafe {
                (
                    read_volatile((d + 12) as *const u16),
                    read_volatile((d + 14) as *const u16),
                )
            };
            self.free.push(id);
            if flags & DESC_F_NEXT == 0 || next >= self.size {
                break;
            }
            id = next;
        }
        Some((head, len))
    }
}
