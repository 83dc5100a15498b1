//! What goes wrong with vsock: a guest that breaks the device contract (which ends its
//! VM), and the reasons a host stream fails (the error inside the `io::Error` it returns).

use std::error::Error;
use std::sync::Arc;
use std::time::Duration;

/// The guest broke the virtio-vsock device contract.
#[derive(Debug, thiserror::Error)]
pub enum VsockError {
    #[error("virtqueue: {0}")]
    Virtqueue(#[source] virtio_queue::Error),
    #[error("malformed TX packet: {0}")]
    MalformedTx(#[source] virtio_vsock::packet::Error),
    #[error("TX packet from CID {src_cid} to CID {dst_cid} of type {type_}")]
    Misaddressed {
        src_cid: u64,
        dst_cid: u64,
        type_: u16,
    },
    #[error("TX used ring: {0}")]
    TxUsedRing(#[source] virtio_queue::Error),
    #[error("malformed RX buffer: {0}")]
    MalformedRx(#[source] virtio_vsock::packet::Error),
    #[error("RX buffer: {0}")]
    RxBuffer(#[source] vm_memory::VolatileMemoryError),
    #[error("RX used ring: {0}")]
    RxUsedRing(#[source] virtio_queue::Error),
    #[error("guest waits for vsock packets but offers no RX buffers")]
    NoRxBuffers,
    #[error("guest left more than {0} vsock control packets unread (no RX buffers)")]
    ControlOverflow(usize),
}

/// Why a host stream to the guest failed or ended.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StreamError {
    #[error("guest refused vsock port {0}")]
    Refused(u32),
    #[error("guest did not accept vsock port {port} in {timeout:?}")]
    NotAccepted { port: u32, timeout: Duration },
    #[error("connection reset by guest")]
    ResetByGuest,
    #[error("guest closed the connection")]
    ClosedByGuest,
    #[error("guest overran its vsock credit")]
    CreditOverrun,
    #[error("unexpected vsock op {0}")]
    UnexpectedOp(u16),
    #[error("guest reset its vsock device")]
    DeviceReset,
    #[error("VM stopped: {0}")]
    VmStopped(#[source] Arc<dyn Error + Send + Sync>),
    #[error("too many vsock connections to this VM")]
    TooManyConnections,
    #[error("vsock read timed out")]
    ReadTimeout,
    #[error("vsock write timed out: the guest takes no data")]
    WriteTimeout,
    #[error("vsock connection is closed")]
    NotConnected,
}
