//! The API's request counting, by route and status, into the service's metrics.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::service::Service;

/// Middleware counting each API request by its route (`METHOD /path/{param}`, so the
/// labels stay few whatever the paths) and status.
pub async fn count_requests(
    State(service): State<Arc<Service>>,
    request: Request,
    next: Next,
) -> Response {
    let operation = match request.extensions().get::<MatchedPath>() {
        Some(path) => format!("{} {}", request.method(), path.as_str()),
        None => "unmatched".to_owned(),
    };
    let response = next.run(request).await;
    service
        .metrics
        .record_http(operation, response.status().as_u16());
    response
}
