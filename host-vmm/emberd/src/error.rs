//! Why the worker could not run: one variant per cause, each carrying the error it came
//! from.

use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

use ember_fleet::tls::TlsError;
use ember_net::listen::ListenError;

use crate::control::ClientError;
use crate::register::RegisterError;

#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("{0}")]
    Jail(#[from] crate::jail::JailError),
    #[error("taking SIGTERM and SIGINT: {0}")]
    Signals(#[source] io::Error),
    #[error("starting the runtime: {0}")]
    Runtime(#[source] io::Error),
    #[error("state directory {}: {source}", path.display())]
    StateDir { path: PathBuf, source: io::Error },
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("{0}")]
    Listen(#[from] ListenError),
    #[error("reading the listening address: {0}")]
    LocalAddr(#[source] io::Error),
    #[error("this VM's vsock CID (/dev/vsock): {0}")]
    LocalCid(#[source] io::Error),
    #[error(
        "listening on {0}: give --advertise HOST:PORT, the address control reaches this worker by"
    )]
    NoAdvertise(SocketAddr),
    #[error("metrics: {0}")]
    MetricsListen(#[source] ListenError),
    #[error("{0}")]
    Control(#[from] ClientError),
    #[error("{0}")]
    Register(#[from] RegisterError),
    #[error("TLS for the worker API: {0}")]
    ApiTls(#[source] TlsError),
    #[error("opening the code cache: {0}")]
    ArtifactCache(#[source] io::Error),
    #[error("the drain signal went away")]
    DrainSignal,
}
