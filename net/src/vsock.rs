//! AF_VSOCK, the transport between a VM and its host: the worker API a worker in a VM
//! serves, and the way it dials control (CID 2, the host). Listeners are served by the
//! same HTTPS accept loop as TCP and Unix ones ([`crate::listen::Listener`]).

use std::io;

use tokio_vsock::{VsockAddr, VMADDR_CID_ANY};
pub use tokio_vsock::{VsockListener, VsockStream};

use crate::listen::{Address, ListenError, Listener};

/// Listens on `port` for connections from any CID.
pub fn bind(port: u32) -> Result<VsockListener, ListenError> {
    VsockListener::bind(VsockAddr::new(VMADDR_CID_ANY, port)).map_err(|source| ListenError {
        addr: Address::Vsock { port },
        source,
    })
}

/// Connects to `port` of `cid` (2 is the host).
pub async fn connect(cid: u32, port: u32) -> io::Result<VsockStream> {
    VsockStream::connect(VsockAddr::new(cid, port)).await
}

/// This machine's own CID, the one its peers dial it by.
pub fn local_cid() -> io::Result<u32> {
    ::vsock::get_local_cid()
}

impl Listener for VsockListener {
    type Stream = VsockStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = VsockListener::accept(self).await?;
        Ok((stream, format!("vsock://{}:{}", peer.cid(), peer.port())))
    }
}
