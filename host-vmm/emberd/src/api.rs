//! The worker API that control calls: `POST` [`ember_fleet::INVOKE`] (provisioned
//! environments come with the heartbeat answers instead), over TLS 1.3 with AES-GCM only, serving the worker's
//! certificate and requiring a client certificate from control's CA whose common name is
//! [`ember_fleet::tls::CONTROL_NAME`]: other workers hold certificates from the same CA,
//! and they must not run invocations here. A connection that is not control's is closed
//! right after the handshake. The accept loop's [`Limits`] bound connections and the
//! time a client may take over its handshake, headers and bodies.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use ember_fleet::messages::InvokeRequest;
use ember_net::limits::Limits;
use ember_net::listen::Listener;
use ember_net::tls_serve::{self, PeerCertificate};
use tokio_rustls::TlsAcceptor;

use crate::invoke::AtCapacity;
use crate::Worker;

/// A request carries at most a 6 MiB event in base64 and the function's settings.
const MAX_BODY: usize = 16 << 20;

/// What a client may hold of the worker API. Only control gets past the handshake, so a
/// stranger can only hold a connection for the handshake's time; the headers, idle and
/// body limits bound what a misbehaving control (or a broken network) holds.
const LIMITS: Limits = Limits::DEFAULT;

/// How long stopping waits for invocations in progress: the longest function timeout
/// (900 s) and a margin.
const DRAIN: Duration = Duration::from_secs(960);

/// The worker API's routes.
fn router(worker: Arc<Worker>) -> Router {
    Router::new()
        .route(ember_fleet::INVOKE, post(invoke))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(worker)
}

/// Serves the worker API on `listener` (TCP or AF_VSOCK) until `stop` completes, then lets requests in
/// progress finish.
pub async fn serve(
    listener: impl Listener,
    acceptor: TlsAcceptor,
    worker: Arc<Worker>,
    stop: impl std::future::Future<Output = ()>,
) {
    let app = router(worker);
    tls_serve::serve(listener, acceptor, app, is_control, LIMITS, DRAIN, stop).await;
}

/// Only control may call: other workers hold certificates from the same CA.
fn is_control(peer: &PeerCertificate) -> bool {
    peer.0
        .as_ref()
        .and_then(ember_fleet::tls::common_name)
        .as_deref()
        == Some(ember_fleet::tls::CONTROL_NAME)
}

async fn invoke(State(worker): State<Arc<Worker>>, Json(request): Json<InvokeRequest>) -> Response {
    let Some(_running) = worker.begin() else {
        return draining();
    };
    match worker.functions.invoke(request).await {
        Ok(response) => Json(response).into_response(),
        Err(refused) => at_capacity(refused),
    }
}

/// 429: control takes it as "nothing ran, this worker is full, try another" (unlike 503,
/// which makes it doubt the worker).
fn at_capacity(refused: AtCapacity) -> Response {
    (StatusCode::TOO_MANY_REQUESTS, refused.to_string()).into_response()
}

/// 503: control takes it as "nothing ran, try another worker".
fn draining() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        "draining: this worker's lease is ending",
    )
        .into_response()
}
