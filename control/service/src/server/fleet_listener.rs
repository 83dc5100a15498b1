//! Control's fleet listener: where workers register, heartbeat, fetch code and
//! deregister. It is TLS 1.3 with AES-GCM only, with a server certificate from the local
//! CA (the one workers are given as `--ca`), and asks every client for a certificate from
//! that CA without requiring one, since a registering worker has none yet; the routes
//! ([`super::fleet_routes`]) require it everywhere else.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use super::fleet_routes::{self as routes, FleetApp};
use super::ServeError;
use crate::fleet::certs::FleetCa;
use crate::fleet::client::WorkerClient;
use crate::fleet::token::BootstrapToken;
use crate::service::{OpenError, Service};
use crate::tls::TlsError;
use ember_store::workers as registry;
use ember_store::RegistryError;

/// Where the fleet listener listens and what its certificate names.
#[derive(Clone, Debug)]
pub struct FleetOptions {
    pub listen: SocketAddr,
    /// Host names (or addresses) workers reach control by, beyond `localhost`, the
    /// loopback addresses and the listen address.
    pub names: Vec<String>,
}

/// A bound fleet listener, ready to serve.
pub struct FleetListener {
    pub listener: TcpListener,
    pub acceptor: TlsAcceptor,
    pub app: Router,
}

/// Prepares everything the fleet needs (bootstrap token, certificates, the client that
/// calls workers, the workers a previous run knew) and binds the listener.
pub async fn bind(
    service: &Arc<Service>,
    options: &FleetOptions,
) -> Result<FleetListener, ServeError> {
    let token = BootstrapToken::load_or_create(&service.data_dir)?;
    let ca = FleetCa::open(&service.data_dir)?;
    let fleet_error = |e: ember_fleet::tls::TlsError| TlsError::Invalid(e.to_string());

    let own = ca.control_client()?;
    let client = WorkerClient::new(ca.ca_pem(), &own).map_err(TlsError::Invalid)?;
    service.fleet.set_client(client);

    let server = ca.listener(options.listen.ip(), &options.names)?;
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
    let app = routes::router(Arc::new(FleetApp {
        service: service.clone(),
        ca,
        token,
    }));
    Ok(FleetListener {
        listener,
        acceptor: TlsAcceptor::from(config),
        app,
    })
}
