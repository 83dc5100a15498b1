//! Devices of an ember micro-VM: a 16550 serial port for the guest's log and a virtio-vsock
//! device on virtio-mmio, its only channel to the host.

pub mod serial;
pub mod virtio_mmio;
pub mod vsock;
