//! The virtio-mmio (version 2) register file: feature negotiation, queue setup and device
//! status, in front of a device's virtqueues.
//!
//! Every register access comes from the guest and is checked: wrong sizes and unknown
//! offsets read as zero and are ignored on write; queues are validated against guest memory
//! before the device may use them.

use ember_wire::virtio::mmio as reg;
use virtio_bindings::virtio_config::{
    VIRTIO_CONFIG_S_DRIVER_OK, VIRTIO_CONFIG_S_FEATURES_OK, VIRTIO_CONFIG_S_NEEDS_RESET,
    VIRTIO_F_VERSION_1,
};
use virtio_queue::{Queue, QueueState, QueueT};

use crate::memory::GuestMemory;

const VERSION: u32 = 2;
const VENDOR_ID: u32 = 0x454d_4252; // "EMBR"

/// What a register write means for the device behind the transport.
#[derive(Debug, PartialEq, Eq)]
pub enum Notice {
    None,
    /// The driver notified queue `n`.
    QueueNotify(u32),
    /// The driver set DRIVER_OK and every ready queue is valid: the device may run.
    Activated,
    /// The driver wrote 0 to the status register: the device must drop all its state.
    Reset,
}

/// Everything needed to rebuild a transport in another VM (a snapshot), in this process or
/// another.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct TransportState {
    device_features: u64,
    driver_features: u64,
    status: u32,
    #[serde(with = "queue_states")]
    queues: Vec<QueueState>,
}

/// virtio-queue's `QueueState` as it crosses processes.
mod queue_states {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use virtio_queue::QueueState;

    #[derive(Serialize, Deserialize)]
    #[serde(remote = "QueueState")]
    struct Def {
        max_size: u16,
        next_avail: u16,
        next_used: u16,
        event_idx_enabled: bool,
        size: u16,
        ready: bool,
        desc_table: u64,
        avail_ring: u64,
        used_ring: u64,
    }

    #[derive(Serialize, Deserialize)]
    struct Wrap(#[serde(with = "Def")] QueueState);

    pub fn serialize<S: Serializer>(queues: &[QueueState], s: S) -> Result<S::Ok, S::Error> {
        let wrapped: Vec<Wrap> = queues.iter().map(|q| Wrap(*q)).collect();
        wrapped.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<QueueState>, D::Error> {
        Ok(Vec::<Wrap>::deserialize(d)?
            .into_iter()
            .map(|w| w.0)
            .collect())
    }
}

pub struct MmioTransport {
    device_id: u32,
    device_features: u64,
    device_features_sel: u32,
    driver_features: u64,
    driver_features_sel: u32,
    queue_sel: u32,
    status: u32,
    queues: Vec<Queue>,
    config: Vec<u8>,
}

impl MmioTransport {
    /// `device_features` must include `VIRTIO_F_VERSION_1`; it is always offered.
    pub fn new(device_id: u32, device_features: u64, queue_sizes: &[u16], config: Vec<u8>) -> Self {
        MmioTransport {
            device_id,
            device_features: device_features | (1 << VIRTIO_F_VERSION_1),
            device_features_sel: 0,
            driver_features: 0,
            driver_features_sel: 0,
            queue_sel: 0,
            status: 0,
            queues: queue_sizes
                .iter()
                .map(|&n| Queue::new(n).expect("queue sizes are powers of two"))
                .collect(),
            config,
        }
    }

    pub fn state(&self) -> TransportState {
        TransportState {
            device_features: self.device_features,
            driver_features: self.driver_features,
            status: self.status,
            queues: self.queues.iter().map(Queue::state).collect(),
        }
    }

    /// A transport in exactly the state `state` was taken in.
    pub fn restore(device_id: u32, config: Vec<u8>, state: &TransportState) -> Self {
        MmioTransport {
            device_id,
            device_features: state.device_features,
            device_features_sel: 0,
            driver_features: state.driver_features,
            driver_features_sel: 0,
            queue_sel: 0,
            status: state.status,
            queues: state
                .queues
                .iter()
                .map(|q| Queue::try_from(*q).expect("a queue state taken from a valid queue"))
                .collect(),
            config,
        }
    }

    /// True once the driver finished setup and the device has not asked for a reset.
    pub fn is_active(&self) -> bool {
        self.status & VIRTIO_CONFIG_S_DRIVER_OK != 0
            && self.status & VIRTIO_CONFIG_S_NEEDS_RESET == 0
    }

    pub fn queues_mut(&mut self) -> &mut [Queue] {
        &mut self.queues
    }

    /// Marks the device broken; the driver must reset it before using it again.
    fn set_needs_reset(&mut self) {
        self.status |= VIRTIO_CONFIG_S_NEEDS_RESET;
    }

    fn selected(&mut self) -> Option<&mut Queue> {
        self.queues.get_mut(self.queue_sel as usize)
    }

    pub fn read(&self, offset: u64, data: &mut [u8]) {
        data.fill(0);
        if offset >= reg::CONFIG {
            let start = (offset - reg::CONFIG) as usize;
            if let Some(src) = self.config.get(start..start + data.len()) {
                data.copy_from_slice(src);
            }
            return;
        }
        if data.len() != 4 {
            return;
        }
        let queue = self.queues.get(self.queue_sel as usize);
        let value = match offset {
            reg::MAGIC_VALUE => reg::MAGIC,
            reg::VERSION => VERSION,
            reg::DEVICE_ID => self.device_id,
            reg::VENDOR_ID => VENDOR_ID,
            reg::DEVICE_FEATURES => match self.device_features_sel {
                0 => self.device_features as u32,
                1 => (self.device_features >> 32) as u32,
                _ => 0,
            },
            reg::QUEUE_NUM_MAX => queue.map_or(0, |q| q.max_size() as u32),
            reg::QUEUE_READY => queue.map_or(0, |q| q.ready() as u32),
            reg::INTERRUPT_STATUS => 0,
            reg::STATUS => self.status,
            reg::CONFIG_GENERATION => 0,
            _ => 0,
        };
        data.copy_from_slice(&value.to_le_bytes());
    }

    pub fn write(&mut self, offset: u64, data: &[u8], mem: &GuestMemory) -> Notice {
        if offset >= reg::CONFIG || data.len() != 4 {
            // The vsock configuration space (the CID) is read-only.
            return Notice::None;
        }
        let v = u32::from_le_bytes(data.try_into().expect("length checked"));
        let configuring = self.status & VIRTIO_CONFIG_S_DRIVER_OK == 0;
        match offset {
            reg::DEVICE_FEATURES_SEL => self.device_features_sel = v,
            reg::DRIVER_FEATURES_SEL => self.driver_features_sel = v,
            reg::DRIVER_FEATURES if self.status & VIRTIO_CONFIG_S_FEATURES_OK == 0 => {
                match self.driver_features_sel {
                    0 => self.driver_features = (self.driver_features & !0xffff_ffff) | v as u64,
                    1 => {
                        self.driver_features =
                            (self.driver_features & 0xffff_ffff) | ((v as u64) << 32)
                    }
                    _ => {}
                }
            }
            reg::QUEUE_SEL => self.queue_sel = v,
            reg::QUEUE_NUM if configuring => {
                if let Some(q) = self.selected() {
                    q.set_size(v as u16)
                }
            }
            reg::QUEUE_READY if configuring => {
                if let Some(q) = self.selected() {
                    q.set_ready(v == 1)
                }
            }
            reg::QUEUE_DESC_LOW | reg::QUEUE_DESC_HIGH if configuring => {
                let (lo, hi) = split(offset == reg::QUEUE_DESC_LOW, v);
                if let Some(q) = self.selected() {
                    q.set_desc_table_address(lo, hi)
                }
            }
            reg::QUEUE_DRIVER_LOW | reg::QUEUE_DRIVER_HIGH if configuring => {
                let (lo, hi) = split(offset == reg::QUEUE_DRIVER_LOW, v);
                if let Some(q) = self.selected() {
                    q.set_avail_ring_address(lo, hi)
                }
            }
            reg::QUEUE_DEVICE_LOW | reg::QUEUE_DEVICE_HIGH if configuring => {
                let (lo, hi) = split(offset == reg::QUEUE_DEVICE_LOW, v);
                if let Some(q) = self.selected() {
                    q.set_used_ring_address(lo, hi)
                }
            }
            reg::QUEUE_NOTIFY => return Notice::QueueNotify(v),
            reg::INTERRUPT_ACK => {}
            reg::STATUS => return self.write_status(v, mem),
            _ => {}
        }
        Notice::None
    }

    fn write_status(&mut self, v: u32, mem: &GuestMemory) -> Notice {
        if v == 0 {
            self.status = 0;
            self.driver_features = 0;
            self.queue_sel = 0;
            self.queues.iter_mut().for_each(|q| q.reset());
            return Notice::Reset;
        }
        let newly = v & !self.status;
        self.status = v | (self.status & VIRTIO_CONFIG_S_NEEDS_RESET);
        if newly & VIRTIO_CONFIG_S_FEATURES_OK != 0 {
            let unknown = self.driver_features & !self.device_features;
            if unknown != 0 || self.driver_features & (1 << VIRTIO_F_VERSION_1) == 0 {
                self.status &= !VIRTIO_CONFIG_S_FEATURES_OK;
            }
        }
        if newly & VIRTIO_CONFIG_S_DRIVER_OK != 0 {
            let valid = self.status & VIRTIO_CONFIG_S_FEATURES_OK != 0
                && self.queues.iter().all(|q| !q.ready() || q.is_valid(mem));
            if !valid {
                self.set_needs_reset();
                return Notice::None;
            }
            return Notice::Activated;
        }
        Notice::None
    }
}

fn split(low: bool, v: u32) -> (Option<u32>, Option<u32>) {
    if low {
        (Some(v), None)
    } else {
        (None, Some(v))
    }
}
