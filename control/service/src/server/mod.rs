//! The `ember-control` service: the Lambda API ([`crate::api`]) behind SigV4
//! authentication ([`auth`]), served over HTTPS only ([`tls`]), with a request id on every
//! response (`api::request_id`).
//!
//! Each connection is a task: the TLS handshake, then HTTP/1.1 by hyper with axum's router
//! as the service, within the listener limits of `Settings::requests` (connections at
//! once, handshake, header and body timeouts: [`ember_net::limits`]) on the API and fleet
//! listeners alike. On shutdown the listener closes, open connections finish their requests (up to
//! [`DRAIN`]), and the call returns.

pub mod auth;
pub mod bootstrap;
pub mod fleet_listener;
pub mod fleet_routes;
pub mod request_metrics;
pub mod sigv4;

#[cfg(test)]
mod test_signing;

use std::future::Future;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode, Uri};
use axum::middleware;
use axum::Router;
use ember_net::listen::{self, ListenError};
use ember_net::tls_serve;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::api;
use crate::api::error::ApiError;
use crate::service::{OpenError, Service, Settings};
use crate::tls;
use ember_core::keys::KeySource;
use fleet_listener::FleetOptions;

/// How long shutdown waits for requests in progress.
pub const DRAIN: Duration = Duration::from_secs(30);

/// What `ember-control serve` needs.
#[derive(Debug)]
pub struct ServeOptions {
    pub data_dir: PathBuf,
    pub listen: SocketAddr,
    /// The operator's certificate chain and key (PEM); `None` uses the local CA.
    pub tls_files: Option<(PathBuf, PathBuf)>,
    pub database_url: Option<String>,
    pub keys: KeySource,
    pub settings: Settings,
    /// The fleet listener's address and names.
    pub fleet: FleetOptions,
    /// Where to serve Prometheus metrics over plain HTTP; `None` serves none.
    pub metrics_listen: Option<SocketAddr>,
}

/// Why the service could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Open(#[from] OpenError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("creating the admin account: {0}")]
    Bootstrap(#[from] ember_store::accounts::AccountError),
    #[error(transparent)]
    Listen(#[from] ListenError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// Runs the service until `shutdown` completes. Prints `ember-control listening on
/// https://ADDR` and then `ember-control fleet listening on https://ADDR` on stdout once
/// both listeners accept connections, then `ember-control metrics on http://ADDR` when it
/// serves metrics, then `ember-control fleet vsock on unix:PATH` when workers in a VM
/// reach it through a hybrid vsock socket.
pub async fn run(
    options: ServeOptions,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let started = start(options).await?;
    let mut lines = format!(
        "ember-control listening on https://{}\n\
         ember-control fleet listening on https://{}\n",
        started.addr, started.fleet_addr
    );
    if let Some(metrics_addr) = started.metrics_addr {
        lines.push_str(&format!("ember-control metrics on http://{metrics_addr}\n"));
    }
    if let Some(path) = &started.fleet_vsock {
        lines.push_str(&format!(
            "ember-control fleet vsock on unix:{}\n",
            path.display()
        ));
    }
    announce(&lines);
    started.serve(shutdown).await;
    Ok(())
}

/// Writes `lines` to stdout in one write, so a reader of the first line never misses the
/// others. A reader that has gone away (a closed pipe) does not stop the service.
fn announce(lines: &str) {
    let mut stdout = io::stdout().lock();
    if let Err(e) = stdout
        .write_all(lines.as_bytes())
        .and_then(|()| stdout.flush())
    {
        tracing::warn!(error = %e, "could not print the listening addresses");
    }
}

/// A service whose listeners are bound, not yet serving: what `ember up` embeds.
pub struct Started {
    /// The API's address (the real port when asked for port 0).
    pub addr: SocketAddr,
    /// The fleet listener's address.
    pub fleet_addr: SocketAddr,
    /// The Unix socket the fleet listener takes vsock connections on, when it does.
    pub fleet_vsock: Option<PathBuf>,
    /// The metrics listener's address, when it serves metrics.
    pub metrics_addr: Option<SocketAddr>,
    pub service: Arc<Service>,
    listener: TcpListener,
    acceptor: TlsAcceptor,
    fleet_listener: fleet_listener::FleetListener,
    metrics_listener: Option<TcpListener>,
}

/// Opens the service in `options.data_dir` and binds both listeners.
pub async fn start(options: ServeOptions) -> Result<Started, ServeError> {
    ember_core::atomic::private_dir(&options.data_dir)
        .map_err(|e| ember_core::atomic::with_path(e, &options.data_dir))?;
    let service = Service::open(
        &options.data_dir,
        options.database_url.as_deref(),
        options.keys,
        options.settings,
    )
    .await?;
    bootstrap::ensure_admin(&service).await?;
    let service = Arc::new(service);
    match api::functions::remove_orphan_artifacts(&service).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "removed code no version references"),
        Err(e) => tracing::warn!(error = %e, "could not remove unreferenced code"),
    }

    let identity = match &options.tls_files {
        Some((cert, key)) => tls::from_files(cert, key)?,
        None => tls::local(&options.data_dir, options.listen.ip())?,
    };
    let acceptor = TlsAcceptor::from(tls::server_config(identity)?);
    let listener = listen::bind(options.listen).await?;
    let addr = listener.local_addr()?;
    let fleet_listener = fleet_listener::bind(&service, &options.fleet).await?;
    let fleet_addr = fleet_listener.listener.local_addr()?;
    let fleet_vsock = options
        .fleet
        .vsock
        .as_ref()
        .map(|vsock| vsock.listen_path());
    tracing::info!(%addr, fleet = %fleet_addr, "listening");
    let metrics_listener = match options.metrics_listen {
        Some(metrics_addr) => Some(listen::bind(metrics_addr).await?),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()?;
    if let Some(metrics_addr) = metrics_addr {
        tracing::info!(%metrics_addr, "serving metrics over plain HTTP");
    }
    Ok(Started {
        addr,
        fleet_addr,
        fleet_vsock,
        metrics_addr,
        service,
        listener,
        acceptor,
        fleet_listener,
        metrics_listener,
    })
}

impl Started {
    /// Serves the listeners, with the background tasks, until `shutdown` completes.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let Started {
            service,
            listener,
            acceptor,
            fleet_listener,
            metrics_listener,
            ..
        } = self;
        tokio::spawn(crate::fleet::leases::watch(service.fleet.clone()));
        tokio::spawn(crate::fleet::provision::run(service.fleet.clone()));
        tokio::spawn(crate::events::executor::run(service.events.clone()));
        let (stop, stopped) = tokio::sync::watch::channel(());
        let stopping = |mut stopped: tokio::sync::watch::Receiver<()>| async move {
            let _ = stopped.changed().await;
        };
        if let Some(listener) = metrics_listener {
            let shutdown = stopping(stopped.clone());
            let registry = service.metrics.registry();
            tokio::spawn(ember_net::exposition::serve(listener, registry, shutdown));
        }
        let limits = service.settings.requests.listener;
        tokio::join!(
            async move {
                shutdown.await;
                let _ = stop.send(());
            },
            tls_serve::serve(
                listener,
                acceptor,
                app(service),
                tls_serve::admit_all,
                limits,
                DRAIN,
                stopping(stopped.clone())
            ),
            tls_serve::serve(
                fleet_listener.listener,
                fleet_listener.acceptor.clone(),
                fleet_listener.app,
                tls_serve::admit_all,
                limits,
                DRAIN,
                stopping(stopped.clone()),
            ),
            async move {
                if let Some((listener, app)) = fleet_listener.vsock {
                    let admit = tls_serve::admit_all;
                    let acceptor = fleet_listener.acceptor;
                    let stopped = stopping(stopped);
                    tls_serve::serve(listener, acceptor, app, admit, limits, DRAIN, stopped).await;
                }
            },
        );
    }
}

/// The whole HTTP application: the API and a Lambda-shaped 404 for anything else, all
/// behind authentication, with request ids outermost.
pub fn app(service: Arc<Service>) -> Router {
    api::router()
        .fallback(unknown_operation)
        .method_not_allowed_fallback(unknown_operation)
        .layer(middleware::from_fn_with_state(
            service.clone(),
            auth::authenticate,
        ))
        // Code downloads carry their own credential, a grant, instead of a signature.
        .merge(api::download::routes())
        .layer(middleware::from_fn(api::request_id::assign))
        .layer(middleware::from_fn_with_state(
            service.clone(),
            request_metrics::count_requests,
        ))
        .with_state(service)
}

/// What Lambda answers for a path and method it has no operation for.
async fn unknown_operation(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "UnknownOperationException",
        format!("Unknown operation {method} {}", uri.path()),
    )
}

/// Completes on SIGTERM or SIGINT. The handlers are installed when this is called (inside
/// the runtime), not when it is first polled: a signal that comes as soon as the service
/// says it listens must already stop it gracefully.
pub fn shutdown_signal() -> impl Future<Output = ()> {
    use tokio::signal::unix::{signal, SignalKind};
    let watch = |kind: SignalKind, name: &'static str| {
        let stream = signal(kind)
            .inspect_err(|e| tracing::error!(error = %e, "cannot watch {name}"))
            .ok();
        async move {
            match stream {
                Some(mut stream) => {
                    stream.recv().await;
                    tracing::info!("{name}");
                }
                None => std::future::pending().await,
            }
        }
    };
    let (term, int) = (
        watch(SignalKind::terminate(), "SIGTERM"),
        watch(SignalKind::interrupt(), "SIGINT"),
    );
    async move {
        tokio::select! {
            () = term => {}
            () = int => {}
        }
    }
}
