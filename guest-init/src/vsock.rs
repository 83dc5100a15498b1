//! The virtio-vsock device from the guest's side: packet headers, RX buffers and TX
//! submission. Connection state and the frame protocol belong to the frame server, which
//! drives this device.

use alloc::boxed::Box;
use alloc::rc::Rc;
use alloc::vec;
use alloc::vec::Vec;
use core::mem::MaybeUninit;

use ember_wire::boot::BootInfo;
pub use ember_wire::virtio::vsock::HEADER_LEN;
use ember_wire::virtio::vsock::{DEVICE_ID, TYPE_STREAM};

use crate::arch;
use crate::virtio::{Mmio, VirtQueue, DESC_F_WRITE};

/// Largest data part of one packet (what the host accepts).
pub const MAX_PACKET_DATA: usize = 64 * 1024;
const RX_QUEUE: u32 = 0;
const TX_QUEUE: u32 = 1;
const TX_QUEUE_SIZE: u16 = 64;
/// Each RX buffer holds one header and up to this much data.
const RX_DATA: usize = 64 * 1024;

/// A virtio-vsock packet header (little-endian, 44 bytes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    pub src_cid: u64,
    pub dst_cid: u64,
    pub src_port: u32,
    pub dst_port: u32,
    pub len: u32,
    pub type_: u16,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&self.src_cid.to_le_bytes());
        b[8..16].copy_from_slice(&self.dst_cid.to_le_bytes());
        b[16..20].copy_from_slice(&self.src_port.to_le_bytes());
        b[20..24].copy_from_slice(&self.dst_port.to_le_bytes());
        b[24..28].copy_from_slice(&self.len.to_le_bytes());
        b[28..30].copy_from_slice(&self.type_.to_le_bytes());
        b[30..32].copy_from_slice(&self.op.to_le_bytes());
        b[32..36].copy_from_slice(&self.flags.to_le_bytes());
        b[36..40].copy_from_slice(&self.buf_alloc.to_le_bytes());
        b[40..44].copy_from_slice(&self.fwd_cnt.to_le_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Option<Header> {
        let b: &[u8; HEADER_LEN] = b.get(..HEADER_LEN)?.try_into().ok()?;
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().unwrap());
        let u64_at = |i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap());
        Some(Header {
            src_cid: u64_at(0),
            dst_cid: u64_at(8),
            src_port: u32_at(16),
            dst_port: u32_at(20),
            len: u32_at(24),
            type_: u16_at(28),
            op: u16_at(30),
            flags: u32_at(32),
            buf_alloc: u32_at(36),
            fwd_cnt: u32_at(40),
        })
    }

    pub fn is_stream(&self) -> bool {
        self.type_ == TYPE_STREAM
    }
}

/// Data a TX packet points at; kept alive until the host has consumed the packet.
pub struct Payload {
    pub buf: Rc<Vec<u8>>,
    pub offset: usize,
    pub len: usize,
}

pub struct Vsock {
    rx: VirtQueue,
    tx: VirtQueue,
    /// RX buffers, and which buffer each RX descriptor head currently holds. They are left
    /// uninitialised (touching them at boot would cost a page fault per page); only the bytes
    /// the device reports as written are ever read.
    rx_bufs: Vec<Box<[MaybeUninit<u8>]>>,
    rx_owner: Vec<usize>,
    /// TX headers, indexed by the head descriptor of their chain.
    tx_headers: Box<[[u8; HEADER_LEN]]>,
    /// Payloads referenced by TX descriptors the host has not consumed yet.
    in_flight: Vec<Rc<Vec<u8>>>,
    pub cid: u64,
}

impl Vsock {
    pub fn new(info: &BootInfo) -> Result<Vsock, &'static str> {
        let mmio = Mmio::probe(info.vsock_mmio, DEVICE_ID)?;
        // Keep RX buffers to about a sixteenth of the heap: 4..=16 buffers of 64 KiB.
        let heap = (info.heap_end - info.heap_start) as usize;
        let rx_count = (heap / 16 / (HEADER_LEN + RX_DATA)).clamp(4, 16);
        let mut rx = VirtQueue::new(rx_count.next_power_of_two() as u16);
        let tx = VirtQueue::new(TX_QUEUE_SIZE);
        let mut rx_bufs = Vec::with_capacity(rx_count);
        let mut rx_owner = vec![0; rx.size() as usize];
        for i in 0..rx_count {
            let buf = Box::new_uninit_slice(HEADER_LEN + RX_DATA);
            let head = rx
                .add(&[(buf.as_ptr() as u64, buf.len() as u32, DESC_F_WRITE)])
                .ok_or("RX queue too small")?;
            rx_owner[head as usize] = i;
            rx_bufs.push(buf);
        }
        mmio.setup_queue(RX_QUEUE, &rx)?;
        mmio.setup_queue(TX_QUEUE, &tx)?;
        mmio.driver_ok();
        Ok(Vsock {
            rx,
            tx,
            rx_bufs,
            rx_owner,
            tx_headers: vec![[0u8; HEADER_LEN]; TX_QUEUE_SIZE as usize].into_boxed_slice(),
            in_flight: Vec::new(),
            cid: info.guest_cid,
        })
    }

    /// Hands every received packet to `handle`, then recycles its buffer.
    /// Packets that are not well-formed stream packets for this CID are dropped.
    pub fn receive(&mut self, mut handle: impl FnMut(&Header, &[u8])) {
        while let Some((head, used)) = self.rx.pop_used() {
            let Some(&index) = self.rx_owner.get(head as usize) else {
                continue;
            };
            let buf = &self.rx_bufs[index];
            let used = (used as usize).min(buf.len());
            // SAFETY: the device wrote the first `used` bytes of this buffer.
            let buf = unsafe { core::slice::from_raw_parts(buf.as_ptr().cast::<u8>(), used) };
            if let Some(h) = Header::decode(buf) {
                let data = buf.get(HEADER_LEN..HEADER_LEN + h.len as usize);
                if let Some(data) = data.filter(|_| h.dst_cid == self.cid && h.is_stream()) {
                    handle(&h, data);
                }
            }
            let buf = &self.rx_bufs[index];
            if let Some(new_head) =
                self.rx
                    .add(&[(buf.as_ptr() as u64, buf.len() as u32, DESC_F_WRITE)])
            {
                self.rx_owner[new_head as usize] = index;
            }
        }
    }

    /// Queues one packet. The host reads it at the next doorbell.
    pub fn send(&mut self, mut header: Header, payload: Option<Payload>) {
        if self.tx.free_descriptors() < 2 {
            self.kick();
        }
        header.src_cid = self.cid;
        header.dst_cid = ember_wire::layout::HOST_CID;
        header.type_ = TYPE_STREAM;
        header.len = payload.as_ref().map_or(0, |p| p.len as u32);
        let head = self
            .tx
            .next_head()
            .expect("descriptors were reclaimed above");
        let slot = &mut self.tx_headers[head as usize];
        *slot = header.encode();
        let header_buf = (slot.as_ptr() as u64, HEADER_LEN as u32, 0);
        match payload {
            Some(p) => {
                let data = (p.buf[p.offset..].as_ptr() as u64, p.len as u32, 0);
                self.tx.add(&[header_buf, data]);
                self.in_flight.push(p.buf);
            }
            None => {
                self.tx.add(&[header_buf]);
            }
        }
    }

    /// The host consumed every queued TX packet during the doorbell exit: reclaim them.
    fn reclaim(&mut self) {
        while self.tx.pop_used().is_some() {}
        self.in_flight.clear();
    }

    /// Test only (hostile mode): makes the TX ring impossible and kicks.
    pub fn corrupt_tx_and_kick(&mut self) {
        self.tx.offer_impossible();
        arch::kick();
    }

    /// Sends queued packets now.
    pub fn kick(&mut self) {
        arch::kick();
        self.reclaim();
    }

    /// Sends queued packets and sleeps until the host delivers at least one packet.
    pub fn kick_and_wait(&mut self) {
        arch::kick_and_wait();
        self.reclaim();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips_and_rejects_short_input() {
        let h = Header {
            src_cid: 2,
            dst_cid: 3,
            src_port: 1024,
            dst_port: 52,
            len: 7,
            type_: 1,
            op: ember_wire::virtio::vsock::OP_RW,
            flags: 0,
            buf_alloc: 1 << 20,
            fwd_cnt: 99,
        };
        assert_eq!(Header::decode(&h.encode()), Some(h));
        assert_eq!(Header::decode(&h.encode()[..43]), None);
    }
}
