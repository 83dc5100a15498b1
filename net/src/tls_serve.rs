//! The HTTPS accept loop both services run: each connection is a task that completes the
//! TLS handshake, asks the caller's [`Admission`] whether that peer may talk here, then
//! serves HTTP/1.1 by hyper with an axum router. The listener's [`Limits`] bound how many
//! connections are served at once (the rest wait in the kernel's accept queue), the
//! handshake, the headers (and the idle time between requests) and every request body, so
//! a silent, slow or stalling client cannot hold a task for long. On shutdown the listener
//! closes and open connections finish their requests, for up to the drain limit. Any
//! [`Listener`] is served the same way: TCP, or a Unix socket such as the one a hybrid
//! vsock connection arrives on.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use rustls_pki_types::CertificateDer;
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

use crate::limits::Limits;
use crate::listen::Listener;

/// The certificate the client of a connection presented, if any, in the extensions of
/// every request on it: routes that serve workers know a worker by it.
#[derive(Clone, Debug)]
pub struct PeerCertificate(pub Option<CertificateDer<'static>>);

/// Decides, after the handshake, whether a peer may send requests on its connection: a
/// refused connection is closed before any request is read.
pub type Admission = fn(&PeerCertificate) -> bool;

/// Admits every peer that completed the handshake (the TLS configuration has already
/// checked whatever certificate it requires).
pub fn admit_all(_: &PeerCertificate) -> bool {
    true
}

/// Accepts TLS connections on `listener` and serves `app` on each connection `admit`
/// allows, within `limits`, until `shutdown`; then lets open connections finish for up to
/// `drain`.
pub async fn serve<L: Listener>(
    listener: L,
    acceptor: TlsAcceptor,
    app: Router,
    admit: Admission,
    limits: Limits,
    drain: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    // The timer enables hyper's limit on how long a client may take to send headers,
    // which also runs while a kept-alive connection waits for its next request.
    http.timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let http = Arc::new(http);
    let connections = Arc::new(Semaphore::new(limits.max_connections));
    tokio::pin!(shutdown);
    loop {
        // Past the cap, nothing is accepted until a connection ends: new clients wait in
        // the kernel's accept queue and the connections being served are not disturbed.
        let permit = tokio::select! {
            () = &mut shutdown => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let (acceptor, app, http) = (acceptor.clone(), app.clone(), http.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let _permit = permit;
            let handshake = acceptor.accept(stream);
            let tls = match tokio::time::timeout(limits.handshake_timeout, handshake).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, error = %e, "TLS handshake failed");
                    return;
                }
                Err(_) => {
                    tracing::debug!(%peer, "TLS handshake timed out");
                    return;
                }
            };
            let certificate = PeerCertificate(
                tls.get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|cert| cert.clone().into_owned()),
            );
            if !admit(&certificate) {
                tracing::warn!(%peer, "refused a client this listener does not serve");
                return;
            }
            let app = app.map_request(move |request: http::Request<Incoming>| {
                let mut request = request.map(|body| Body::new(limits.bound_body(body)));
                request.extensions_mut().insert(certificate.clone());
                request
            });
            let connection =
                http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(connection).await {
                tracing::debug!(%peer, error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tracing::info!("shutting down: finishing requests in progress");
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("requests still in progress after {drain:?}; stopping anyway");
    }
}
