//! Binding a TCP listener, with the address in the error: "address in use" alone does not
//! say which of a service's listeners failed.

use std::io;
use std::net::SocketAddr;

use tokio::net::TcpListener;

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listening on {addr}: {source}")]
pub struct ListenError {
    pub addr: SocketAddr,
    #[source]
    pub source: io::Error,
}

/// Binds `addr` (port 0 picks a free port; ask the listener for the real one).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })
}
