//! The vsock device and its virtio-mmio queues as a fuzz target sees them: guest memory
//! and register writes a hostile guest controls, doorbells, and the host streams that give
//! the device something to deliver. No KVM is needed; everything else is the code a VM
//! runs. Used by `ember-fuzz` (`fuzz/src/targets/vsock_device.rs`).

use std::sync::Arc;
use std::time::Instant;

use vm_memory::{Bytes, GuestAddress};

use crate::devices::vsock::hub::{Hub, MAX_CONTROL_QUEUED};
use crate::devices::vsock::{Doorbell, VsockDevice};
use crate::memory::GuestMemory;
use crate::VsockError;

/// Guest memory of the harness: small, so random addresses often land in it.
pub const MEMORY: u64 = 64 * 1024;
/// The guest CID the device is built with.
pub const GUEST_CID: u64 = 3;

/// One vsock device in front of [`MEMORY`] bytes of guest memory.
pub struct VsockHarness {
    mem: GuestMemory,
    device: VsockDevice,
    hub: Arc<Hub>,
    streams: Vec<u32>,
}

impl Default for VsockHarness {
    fn default() -> Self {
        let mem = GuestMemory::from_ranges(&[(GuestAddress(0), MEMORY as usize)])
            .expect("mapping the harness's guest memory");
        let hub = Arc::new(Hub::default());
        VsockHarness {
            mem,
            device: VsockDevice::new(GUEST_CID, hub.clone()),
            hub,
            streams: Vec::new(),
        }
    }
}

impl VsockHarness {
    /// Writes guest memory, as the guest may at any time; `false` if outside it.
    pub fn write_memory(&self, addr: u64, bytes: &[u8]) -> bool {
        self.mem.write_slice(bytes, GuestAddress(addr)).is_ok()
    }

    /// A register write by the guest (`offset` into the MMIO window); `Err` means the
    /// guest broke the device contract and its VM would end.
    pub fn mmio_write(&mut self, offset: u64, data: &[u8]) -> Result<(), VsockError> {
        self.device.mmio_write(offset, data, &self.mem)
    }

    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        self.device.mmio_read(offset, data);
    }

    /// The guest's kick doorbell: drain TX, fill RX. Never parks.
    pub fn kick(&mut self) -> Result<(), VsockError> {
        match self.device.doorbell(false, &self.mem)? {
            Doorbell::Resume => Ok(()),
            other => panic!("a kick without a pause or trim request asked for {other:?}"),
        }
    }

    /// The host opens a stream to `port` in the guest (without waiting for it).
    pub fn host_open(&mut self, port: u32) {
        if let Ok(local) = self.hub.open(port) {
            self.streams.push(local);
        }
    }

    /// The host writes `bytes` on its `n`th stream, without waiting for the guest; returns
    /// how much was queued.
    pub fn host_write(&mut self, n: usize, bytes: &[u8]) -> usize {
        let Some(&local) = self.streams.get(n % self.streams.len().max(1)) else {
            return 0;
        };
        self.hub
            .write(local, bytes, Some(Instant::now()))
            .unwrap_or(0)
    }

    /// The host reads what the guest sent on its `n`th stream, without waiting.
    pub fn host_read(&mut self, n: usize) -> usize {
        let Some(&local) = self.streams.get(n % self.streams.len().max(1)) else {
            return 0;
        };
        let mut buf = [0u8; 4096];
        self.hub
            .read(local, &mut buf, Some(std::time::Duration::ZERO))
            .unwrap_or(0)
    }

    /// The host drops its `n`th stream.
    pub fn host_close(&mut self, n: usize) {
        if self.streams.is_empty() {
            return;
        }
        let local = self.streams.swap_remove(n % self.streams.len());
        self.hub.close(local);
    }

    /// Control packets the host holds for the guest: never more than the bound.
    pub fn control_queued(&self) -> usize {
        let queued = self.hub.control_queued();
        assert!(
            queued <= MAX_CONTROL_QUEUED,
            "{queued} control packets queued"
        );
        queued
    }
}
