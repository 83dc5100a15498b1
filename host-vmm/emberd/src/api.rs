//! The worker API that control calls: `POST` [`ember_fleet::INVOKE`] (provisioned
//! environments come with the heartbeat answers instead), over TLS 1.3 with AES-GCM only, serving the worker's
//! certificate and requiring a client certificate from control's CA whose common name is
//! [`ember_fleet::tls::CONTROL_NAME`]: other workers hold certificates from the same CA,
//! and they must not run invocations here. A connection that is not control's is closed
//! right after the handshake.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ember_fleet::messages::InvokeRequest;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

use crate::Worker;

/// A request carries at most a 6 MiB event in base64 and the function's settings.
const MAX_BODY: usize = 16 << 20;

/// How long a client may take to complete the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The worker API's routes.
fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route(ember_fleet::INVOKE, post(invoke))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(worker)
}

/// Serves the worker API on `listener` until `stop` completes, then lets requests in
/// progress finish.
pub async fn serve(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    worker: Arc<Worker>,
    stop: impl std::future::Future<Output = ()>,
) {
    let app = router(worker);
    let graceful = GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new());
    let http = Arc::new(http);
    tokio::pin!(stop);
    loop {
        let (tcp, peer) = tokio::select! {
            () = &mut stop => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    log::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let (acceptor, app, http) = (acceptor.clone(), app.clone(), http.clone());
        let watcher = graceful.watcher();
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => tls,
                Ok(Err(e)) => {
                    log::info!("{peer}: TLS handshake failed: {e}");
                    return;
                }
                Err(_) => return,
            };
            let name = tls
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|chain| chain.first())
                .and_then(ember_fleet::tls::common_name);
            if name.as_deref() != Some(ember_fleet::tls::CONTROL_NAME) {
                log::warn!("{peer}: refused a client that is not control ({name:?})");
                return;
            }
            let connection =
                http.serve_connection(TokioIo::new(tls), TowerToHyperService::new(app));
            if let Err(e) = watcher.watch(connection).await {
                log::debug!("{peer}: connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

async fn invoke(State(worker): State<Arc<Worker>>, Json(request): Json<InvokeRequest>) -> Response {
    let Some(_running) = worker.begin() else {
        return draining();
    };
    Json(worker.functions.invoke(request).await).into_response()
}

/// 503: control takes it as "nothing ran, try another worker".
fn draining() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "draining: this worker's lease is ending",
    )
        .into_response()
}
