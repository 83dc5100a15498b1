//! Request ids: every response carries `x-amzn-RequestId` (a UUID, as Lambda's), the same
//! id is in the request's extensions for handlers ([`RequestId`]) and in the log line of
//! the request, so a client's error report can be found in the logs.

use std::time::Instant;

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

/// The response header, as Lambda names it (HTTP header names are case-insensitive).
pub const HEADER: &str = "x-amzn-requestid";

/// The id of the request being handled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestId(pub String);

/// The middleware (`axum::middleware::from_fn`), outermost so that refused requests get
/// an id too.
pub async fn assign(mut request: Request, next: Next) -> Response {
    let id = uuid::Uuid::new_v4().to_string();
    request.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!(
        "request",
        id = %id,
        method = %request.method(),
        path = %request.uri().path(),
        account = tracing::field::Empty,
    );
    let started = Instant::now();
    let mut response = next.run(request).instrument(span.clone()).await;
    let value = HeaderValue::from_str(&id).expect("a UUID is a valid header value");
    response.headers_mut().entry(HEADER).or_insert(value);
    span.in_scope(|| {
        tracing::info!(
            status = response.status().as_u16(),
            ms = started.elapsed().as_millis() as u64,
            "handled"
        );
    });
    response
}
