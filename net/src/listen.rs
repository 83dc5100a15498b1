//! Binding listeners, with the address in the error ("address in use" alone does not say
//! which of a service's listeners failed), and [`Listener`]: what the HTTPS accept loop
//! needs of one, so TCP and Unix sockets (a Firecracker-style hybrid vsock socket is a Unix
//! socket on the host) are served the same way.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, UnixListener};

/// Where a listener was to listen.
#[derive(Debug)]
pub enum Address {
    Tcp(SocketAddr),
    Unix(PathBuf),
    /// An AF_VSOCK port, on any CID.
    Vsock {
        port: u32,
    },
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Address::Tcp(addr) => addr.fmt(f),
            Address::Unix(path) => write!(f, "unix:{}", path.display()),
            Address::Vsock { port } => write!(f, "vsock://-1:{port}"),
        }
    }
}

/// A listener could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("listening on {addr}: {source}")]
pub struct ListenError {
    pub addr: Address,
    #[source]
    pub source: io::Error,
}

/// Binds `addr` (port 0 picks a free port; ask the listener for the real one).
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, ListenError> {
    TcpListener::bind(addr).await.map_err(|source| ListenError {
        addr: Address::Tcp(addr),
        source,
    })
}

/// Binds the Unix socket `path`, replacing a socket file a previous run left behind (a
/// stale socket refuses every connection, so nothing is lost by removing it); any other
/// kind of file there is an error.
pub fn bind_unix(path: &Path) -> Result<UnixListener, ListenError> {
    let error = |source| ListenError {
        addr: Address::Unix(path.to_path_buf()),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(meta) if std::os::unix::fs::FileTypeExt::is_socket(&meta.file_type()) => {
            std::fs::remove_file(path).map_err(error)?;
        }
        Ok(_) => {
            return Err(error(io::Error::new(
                io::ErrorKind::AlreadyExists,
                "a file that is not a socket is in the way",
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(error(e)),
    }
    UnixListener::bind(path).map_err(error)
}

/// A stream listener the HTTPS accept loop serves: TCP, a Unix socket, or AF_VSOCK
/// ([`crate::vsock`]).
pub trait Listener: Send + 'static {
    /// One accepted connection.
    type Stream: AsyncRead + AsyncWrite + Unpin + Send + 'static;

    /// The next connection and a description of its peer for the logs.
    fn accept(&self) -> impl Future<Output = io::Result<(Self::Stream, String)>> + Send;
}

impl Listener for TcpListener {
    type Stream = tokio::net::TcpStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, peer) = TcpListener::accept(self).await?;
        // Requests and answers are small and latency-bound: send them at once.
        let _ = stream.set_nodelay(true);
        Ok((stream, peer.to_string()))
    }
}

impl Listener for UnixListener {
    type Stream = tokio::net::UnixStream;

    async fn accept(&self) -> io::Result<(Self::Stream, String)> {
        let (stream, _) = UnixListener::accept(self).await?;
        // Unix peers have no address worth logging; the listener's path says where.
        let path = self.local_addr().ok().and_then(|addr| {
            addr.as_pathname()
                .map(|path| format!("unix:{}", path.display()))
        });
        Ok((stream, path.unwrap_or_else(|| "unix".to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_stale_socket_is_replaced_and_other_files_are_kept() {
        let dir = std::env::temp_dir().join(format!("ember-net-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("fleet.sock");
        drop(bind_unix(&path).unwrap());
        assert!(path.exists(), "the socket file stays after its listener");
        let listener = bind_unix(&path).unwrap();
        let client = tokio::net::UnixStream::connect(&path);
        let (accepted, client) = tokio::join!(Listener::accept(&listener), client);
        client.unwrap();
        assert_eq!(accepted.unwrap().1, format!("unix:{}", path.display()));

        let plain = dir.join("plain");
        std::fs::write(&plain, b"keep me").unwrap();
        let refused = bind_unix(&plain).unwrap_err();
        assert!(refused.to_string().contains("not a socket"), "{refused}");
        assert_eq!(std::fs::read(&plain).unwrap(), b"keep me");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
