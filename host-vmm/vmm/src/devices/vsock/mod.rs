//! The virtio-vsock device (device id 19) behind a virtio-mmio transport.
//!
//! The device runs on the vCPU thread: a doorbell exit makes it drain the TX queue into the
//! [`hub::Hub`] and fill the RX queue from it, and a *wait* doorbell parks the vCPU until
//! there is something to deliver. The guest never needs a queue-notify MMIO write or an
//! interrupt, so one request/response costs one exit. Notification suppression
//! (`VIRTQ_USED_F_NO_NOTIFY`) tells a standard driver the same.

mod error;
pub mod hub;
pub mod stream;
pub mod uds;

use std::sync::Arc;

use ember_wire::layout::HOST_CID;
use ember_wire::virtio::vsock::{DEVICE_ID, OP_RW, TYPE_STREAM};
use virtio_queue::{DescriptorChain, Queue, QueueOwnedT, QueueT};
use virtio_vsock::packet::{VsockPacket, PKT_HEADER_SIZE};
use vm_memory::bitmap::BitmapSlice;
use vm_memory::VolatileSlice;

use crate::devices::virtio_mmio::{MmioTransport, Notice, TransportState};
use crate::memory::GuestMemory;
pub use error::{StreamError, VsockError};
use hub::{Hub, Incoming, Wake, HOST_BUF_ALLOC};

const QUEUE_SIZE: u16 = 256;
const RX: usize = 0;
const TX: usize = 1;
/// Largest data part of one packet, as in Linux.
const MAX_PKT_DATA: u32 = 64 * 1024;

pub struct VsockDevice {
    transport: MmioTransport,
    hub: Arc<Hub>,
    guest_cid: u64,
    scratch: Vec<u8>,
    /// Packets were put in the RX queue since the guest last waited: a wait returns at once,
    /// as the guest has not seen them yet (a plain kick may have delivered them).
    delivered_since_wait: bool,
}

/// What [`VsockDevice::doorbell`] asks of the vCPU loop.
#[derive(Debug, PartialEq, Eq)]
pub enum Doorbell {
    /// Run the guest.
    Resume,
    /// The guest is parked with no connection and a pause was requested: capture it.
    Pause,
    /// The guest is parked and idle, and a trim was requested: trim, then run the guest
    /// (which parks again).
    Trim,
}

impl VsockDevice {
    pub fn new(guest_cid: u64, hub: Arc<Hub>) -> Self {
        VsockDevice {
            transport: MmioTransport::new(
                DEVICE_ID,
                0,
                &[QUEUE_SIZE; 3],
                guest_cid.to_le_bytes().to_vec(),
            ),
            hub,
            guest_cid,
            scratch: Vec::new(),
            delivered_since_wait: false,
        }
    }

    /// Rebuilds the device of a snapshot (taken with no connections open).
    pub fn restore(guest_cid: u64, hub: Arc<Hub>, state: &TransportState) -> Self {
        VsockDevice {
            transport: MmioTransport::restore(DEVICE_ID, guest_cid.to_le_bytes().to_vec(), state),
            hub,
            guest_cid,
            scratch: Vec::new(),
            delivered_since_wait: false,
        }
    }

    /// Puts the transport back as it was in `state` (the guest's memory was reset with it,
    /// so every connection is gone too).
    pub fn restore_state(&mut self, state: &TransportState) {
        self.hub.reset_connections();
        self.transport =
            MmioTransport::restore(DEVICE_ID, self.guest_cid.to_le_bytes().to_vec(), state);
        self.delivered_since_wait = false;
    }

    /// The connection table this device moves packets for.
    pub fn hub(&self) -> &Arc<Hub> {
        &self.hub
    }

    pub fn state(&self) -> TransportState {
        self.transport.state()
    }

    pub fn mmio_read(&self, offset: u64, data: &mut [u8]) {
        self.transport.read(offset, data);
    }

    pub fn mmio_write(
        &mut self,
        offset: u64,
        data: &[u8],
        mem: &GuestMemory,
    ) -> Result<(), VsockError> {
        match self.transport.write(offset, data, mem) {
            Notice::QueueNotify(_) => self.doorbell(false, mem).map(drop),
            Notice::Activated => {
                for q in self.transport.queues_mut() {
                    if q.ready() {
                        q.disable_notification(mem).map_err(VsockError::Virtqueue)?;
                    }
                }
                Ok(())
            }
            Notice::Reset => {
                self.hub.reset_connections();
                Ok(())
            }
            Notice::None => Ok(()),
        }
    }

    /// Drains TX and fills RX; with `wait`, parks until at least one packet reached the
    /// guest, a stop was requested, or a pause (which needs an idle guest).
    pub fn doorbell(&mut self, wait: bool, mem: &GuestMemory) -> Result<Doorbell, VsockError> {
        if !self.transport.is_active() {
            return Ok(Doorbell::Resume);
        }
        self.drain_tx(mem)?;
        self.delivered_since_wait |= self.fill_rx(mem)? > 0;
        if !wait || std::mem::take(&mut self.delivered_since_wait) {
            return Ok(Doorbell::Resume);
        }
        match self.hub.wait_for_outgoing() {
            Wake::Stop => Ok(Doorbell::Resume),
            Wake::Pause => Ok(Doorbell::Pause),
            Wake::Trim => Ok(Doorbell::Trim),
            Wake::Work if self.fill_rx(mem)? == 0 => Err(VsockError::NoRxBuffers),
            Wake::Work => Ok(Doorbell::Resume),
        }
    }

    fn drain_tx(&mut self, mem: &GuestMemory) -> Result<(), VsockError> {
        let queue = &mut self.transport.queues_mut()[TX];
        while let Some(mut chain) = next_chain(queue, mem)? {
            let head = chain.head_index();
            let pkt = VsockPacket::from_tx_virtq_chain(mem, &mut chain, MAX_PKT_DATA)
                .map_err(VsockError::MalformedTx)?;
            if pkt.src_cid() != self.guest_cid
                || pkt.dst_cid() != HOST_CID
                || pkt.type_() != TYPE_STREAM
            {
                return Err(VsockError::Misaddressed {
                    src_cid: pkt.src_cid(),
                    dst_cid: pkt.dst_cid(),
                    type_: pkt.type_(),
                });
            }
            let data = match pkt.data_slice() {
                Some(slice) if pkt.op() == OP_RW => {
                    self.scratch.resize(slice.len(), 0);
                    slice.copy_to(&mut self.scratch[..]);
                    &self.scratch[..]
                }
                _ => &[],
            };
            self.hub.incoming(Incoming {
                local: pkt.dst_port(),
                peer: pkt.src_port(),
                op: pkt.op(),
                flags: pkt.flags(),
                buf_alloc: pkt.buf_alloc(),
                fwd_cnt: pkt.fwd_cnt(),
                data,
            });
            queue
                .add_used(mem, head, 0)
                .map_err(VsockError::TxUsedRing)?;
        }
        if self.hub.overflowed() {
            return Err(VsockError::ControlOverflow(hub::MAX_CONTROL_QUEUED));
        }
        Ok(())
    }

    /// Moves queued packets into guest RX buffers; returns how many were delivered.
    fn fill_rx(&mut self, mem: &GuestMemory) -> Result<usize, VsockError> {
        let mut delivered = 0;
        let queue = &mut self.transport.queues_mut()[RX];
        while self.hub.has_outgoing() {
            let Some(mut chain) = next_chain(queue, mem)? else {
                break;
            };
            let head = chain.head_index();
            let mut pkt = VsockPacket::from_rx_virtq_chain(mem, &mut chain, MAX_PKT_DATA)
                .map_err(VsockError::MalformedRx)?;
            let room = pkt.data_slice().map_or(0, |s| s.len());
            let Some(out) = self.hub.next_outgoing(room) else {
                // Raced with a host thread (or nothing fits): give the buffer back unused.
                queue.go_to_previous_position();
                break;
            };
            if let Some(slice) = pkt.data_slice() {
                write_data(slice, &out.data).map_err(VsockError::RxBuffer)?;
            }
            pkt.set_src_cid(HOST_CID)
                .set_dst_cid(self.guest_cid)
                .set_src_port(out.local)
                .set_dst_port(out.peer)
                .set_type(TYPE_STREAM)
                .set_op(out.op)
                .set_flags(out.flags)
                .set_len(out.data.len() as u32)
                .set_buf_alloc(HOST_BUF_ALLOC)
                .set_fwd_cnt(out.fwd_cnt);
            let used = (PKT_HEADER_SIZE + out.data.len()) as u32;
            queue
                .add_used(mem, head, used)
                .map_err(VsockError::RxUsedRing)?;
            delivered += 1;
        }
        Ok(delivered)
    }
}

fn write_data<B: BitmapSlice>(
    slice: &VolatileSlice<'_, B>,
    data: &[u8],
) -> Result<(), vm_memory::VolatileMemoryError> {
    slice.subslice(0, data.len())?.copy_from(data);
    Ok(())
}

/// The next chain the guest offers, if any. virtio-queue's `pop_descriptor_chain` logs an
/// error and offers nothing when the available index is impossible, on every kick a guest
/// cares to make; here a malformed ring is the guest's fault, and ends its VM.
fn next_chain<'m>(
    queue: &mut Queue,
    mem: &'m GuestMemory,
) -> Result<Option<DescriptorChain<&'m GuestMemory>>, VsockError> {
    Ok(queue.iter(mem).map_err(VsockError::Virtqueue)?.next())
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Address, Bytes, GuestAddress};

    fn write(dev: &mut VsockDevice, mem: &GuestMemory, offset: u64, v: u32) {
        dev.mmio_write(offset, &v.to_le_bytes(), mem).unwrap();
    }

    fn read(dev: &VsockDevice, offset: u64) -> u32 {
        let mut b = [0u8; 4];
        dev.mmio_read(offset, &mut b);
        u32::from_le_bytes(b)
    }

    /// Negotiates VERSION_1 and sets up RX and TX with the given ring addresses.
    fn activate(dev: &mut VsockDevice, mem: &GuestMemory, rings: [u32; 2]) -> u32 {
        write(dev, mem, 0x70, 3);
        write(dev, mem, 0x24, 1);
        write(dev, mem, 0x20, 1);
        write(dev, mem, 0x70, 3 | 8);
        for (q, base) in rings.into_iter().enumerate() {
            write(dev, mem, 0x30, q as u32);
            write(dev, mem, 0x38, 16);
            write(dev, mem, 0x80, base);
            write(dev, mem, 0x90, base + 0x100);
            write(dev, mem, 0xa0, base + 0x200);
            write(dev, mem, 0x44, 1);
        }
        write(dev, mem, 0x70, 3 | 8 | 4);
        read(dev, 0x70)
    }

    fn memory() -> GuestMemory {
        GuestMemory::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap()
    }

    #[test]
    fn identifies_as_a_virtio_mmio_vsock_device_with_its_cid() {
        let dev = VsockDevice::new(7, Arc::default());
        assert_eq!(read(&dev, 0x0), 0x7472_6976);
        assert_eq!(read(&dev, 0x4), 2);
        assert_eq!(read(&dev, 0x8), 19);
        let mut cid = [0u8; 8];
        dev.mmio_read(0x100, &mut cid);
        assert_eq!(u64::from_le_bytes(cid), 7);
        let mut short = [0xffu8; 2];
        dev.mmio_read(0x0, &mut short);
        assert_eq!(short, [0, 0], "registers are 32-bit only");
    }

    #[test]
    fn refuses_a_driver_without_version_1() {
        let mem = memory();
        let mut dev = VsockDevice::new(3, Arc::default());
        write(&mut dev, &mem, 0x70, 3);
        write(&mut dev, &mem, 0x70, 3 | 8);
        assert_eq!(read(&dev, 0x70) & 8, 0, "FEATURES_OK must not stick");
    }

    #[test]
    fn rings_outside_guest_memory_are_refused() {
        let mem = memory();
        let mut dev = VsockDevice::new(3, Arc::default());
        let status = activate(&mut dev, &mem, [0x1000, 0x20_0000]);
        assert_ne!(
            status & 0x40,
            0,
            "DEVICE_NEEDS_RESET expected, got {status:#x}"
        );
        assert!(!dev.transport.is_active());
    }

    #[test]
    fn a_malformed_tx_descriptor_is_a_guest_error() {
        let mem = memory();
        let mut dev = VsockDevice::new(3, Arc::default());
        let status = activate(&mut dev, &mem, [0x1000, 0x2000]);
        assert_eq!(status & 0x40, 0);
        // TX descriptor 0 points far outside guest memory; offer it.
        mem.write_obj(0x4000_0000u64, GuestAddress(0x2000)).unwrap();
        mem.write_obj(44u32, GuestAddress(0x2008)).unwrap();
        mem.write_obj(0u16, GuestAddress(0x2100 + 4)).unwrap();
        mem.write_obj(1u16, GuestAddress(0x2100 + 2)).unwrap();
        let err = dev.doorbell(false, &mem).unwrap_err();
        assert!(matches!(err, VsockError::MalformedTx(_)), "{err}");
    }

    #[test]
    fn a_guest_that_floods_stray_packets_without_rx_buffers_is_a_guest_error() {
        let mem = memory();
        let mut dev = VsockDevice::new(3, Arc::default());
        activate(&mut dev, &mem, [0x1000, 0x2000]);
        // One header-only RW packet to a port the host never opened, which the host must
        // answer with a reset; no RX buffers are ever posted to take the resets.
        let header = GuestAddress(0x8000);
        mem.write_obj(3u64, header).unwrap();
        mem.write_obj(HOST_CID, header.unchecked_add(8)).unwrap();
        mem.write_obj(1u32, header.unchecked_add(16)).unwrap();
        mem.write_obj(9999u32, header.unchecked_add(20)).unwrap();
        mem.write_obj(TYPE_STREAM, header.unchecked_add(28))
            .unwrap();
        mem.write_obj(OP_RW, header.unchecked_add(30)).unwrap();
        for d in 0..16u64 {
            mem.write_obj(header.0, GuestAddress(0x2000 + 16 * d))
                .unwrap();
            mem.write_obj(PKT_HEADER_SIZE as u32, GuestAddress(0x2008 + 16 * d))
                .unwrap();
        }
        let mut posted = 0u16;
        for _ in 0..2 * hub::MAX_CONTROL_QUEUED / 16 {
            for d in 0..16u16 {
                let slot = u64::from(posted % 16);
                mem.write_obj(d, GuestAddress(0x2104 + 2 * slot)).unwrap();
                posted = posted.wrapping_add(1);
            }
            mem.write_obj(posted, GuestAddress(0x2102)).unwrap();
            if let Err(err) = dev.doorbell(false, &mem) {
                assert!(matches!(err, VsockError::ControlOverflow(_)), "{err}");
                assert!(usize::from(posted) > hub::MAX_CONTROL_QUEUED);
                return;
            }
        }
        panic!("{posted} stray packets and no RX buffers, yet the VM lives");
    }

    #[test]
    fn an_impossible_available_index_is_a_guest_error() {
        let mem = memory();
        let mut dev = VsockDevice::new(3, Arc::default());
        activate(&mut dev, &mem, [0x1000, 0x2000]);
        // 17 chains offered on a ring of 16.
        mem.write_obj(17u16, GuestAddress(0x2102)).unwrap();
        let err = dev.doorbell(false, &mem).unwrap_err();
        assert!(matches!(err, VsockError::Virtqueue(_)), "{err}");
    }
}
