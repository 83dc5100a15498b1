//! Control's fleet listener: where workers register, heartbeat, fetch code and
//! deregister. It is TLS 1.3 with AES-GCM only, with a server certificate from the local
//! CA (the one workers are given as `--ca`), and asks every client for a certificate from
//! the fleet CA without requiring one, since a registering worker has none yet; the routes
//! ([`super::fleet_routes`]) require it everywhere else.
//!
//! Workers in a VM on this host reach it over vsock as well: a guest dialing CID 2 port P
//! arrives, through `vhost-device-vsock --uds-path PATH`, on the Unix socket `PATH_P`,
//! which control listens on with the same TLS and routes. What a worker registering there
//! claims as its address is not trusted: control keeps only the port and records
//! `worker.vsock.ember:PORT` ([`ember_fleet::vsock`]), which its worker client dials through
//! `PATH` with `CONNECT PORT`, into that same VM and nowhere else. Registrations over TCP
//! may not claim that name.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::{Extension, Router};
use tokio::net::{TcpListener, UnixListener};
use tokio_rustls::TlsAcceptor;

use super::fleet_routes::{self as routes, FleetApp, Transport};
use super::ServeError;
use crate::fleet::certs::FleetCa;
use crate::fleet::client::WorkerClient;
use crate::fleet::join;
use crate::fleet::token::BootstrapToken;
use crate::service::{OpenError, Service};
use crate::tls::TlsError;
use ember_core::clock;
use ember_store::workers as registry;
use ember_store::RegistryError;

/// Where the fleet listener listens and what its certificate names.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub listen: SocketAddr,
    /// Host names (or addresses) workers reach control by, beyond `localhost`, the
    /// loopback addresses and the listen address.
    pub names: Vec<String>,
    /// Also accept workers over vsock, through this hybrid socket.
    pub vsock: Option<HybridVsock>,
}

/// A VM's hybrid vsock socket (`vhost-device-vsock --uds-path`) and the port its guest
/// dials control on.
#[derive(Clone, Debug)]
pub struct HybridVsock {
    pub uds: PathBuf,
    pub port: u32,
}

impl HybridVsock {
    /// The Unix socket a guest's connection to host port `port` arrives on.
    pub fn listen_path(&self) -> PathBuf {
        let mut path = self.uds.clone().into_os_string();
        path.push(format!("_{}", self.port));
        path.into()
    }
}

/// A bound fleet listener, ready to serve.
pub struct FleetListener {
    pub listener: TcpListener,
    pub acceptor: TlsAcceptor,
    pub app: Router,
    /// The hybrid vsock socket's listener and its application, when asked for.
    pub vsock: Option<(UnixListener, Router)>,
}

/// Prepares everything the fleet needs (the bootstrap token, recorded as a join token;
/// certificates; the client that calls workers; the workers a previous run knew) and binds
/// the listener.
pub async fn bind(
    service: &Arc<Service>,
    options: &FleetOptions,
) -> Result<FleetListener, ServeError> {
    let token = BootstrapToken::load_or_create(&service.data_dir)?;
    let ceiling = &service.fleet.settings.bootstrap_ceiling;
    join::record_bootstrap(service.registry.pool(), &token, ceiling, clock::now_unix())
        .await
        .map_err(|e| OpenError::Registry(RegistryError::Sql(e)))?;
    let ca = FleetCa::open(&service.data_dir)?;
    let fleet_error = |e: ember_fleet::tls::TlsError| TlsError::Invalid(e.to_string());

    let own = ca.control_client()?;
    let hybrid = options.vsock.as_ref().map(|vsock| vsock.uds.clone());
    let workers = service.fleet.workers.clone();
    let client =
        WorkerClient::new(ca.ca_pem(), &own, hybrid, workers).map_err(TlsError::Invalid)?;
    service.fleet.set_client(client);

    let mut names = options.names.clone();
    if options.vsock.is_some() {
        names.push(ember_fleet::vsock::CONTROL_NAME.to_owned());
    }
    let server = ca.listener(options.listen.ip(), &names)?;
    let identity = ember_fleet::tls::Identity {
        certificate_pem: &server.certificate,
        key_pem: &server.key,
    };
    let config =
        ember_fleet::tls::server_config(ca.ca_pem(), &identity, true).map_err(fleet_error)?;

    let known = registry::current(service.registry.pool())
        .await
        .map_err(|e| OpenError::Registry(RegistryError::Sql(e)))?;
    for row in &known {
        service.fleet.workers.add(row);
    }
    if !known.is_empty() {
        tracing::info!(
            workers = known.len(),
            "resuming the workers a previous run knew"
        );
    }

    let listener = ember_net::listen::bind(options.listen).await?;
    let vsock = match &options.vsock {
        Some(vsock) => Some(ember_net::listen::bind_unix(&vsock.listen_path())?),
        None => None,
    };
    let app = routes::router(Arc::new(FleetApp {
        service: service.clone(),
        ca,
    }));
    let vsock = vsock.map(|listener| {
        let app = app.clone().layer(Extension(Transport::HybridVsock));
        (listener, app)
    });
    Ok(FleetListener {
        listener,
        acceptor: TlsAcceptor::from(config),
        app: app.layer(Extension(Transport::Tcp)),
        vsock,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guest_port_arrives_on_the_uds_path_and_port() {
        let vsock = HybridVsock {
            uds: "/run/vm.sock".into(),
            port: 9444,
        };
        assert_eq!(vsock.listen_path(), PathBuf::from("/run/vm.sock_9444"));
    }
}
