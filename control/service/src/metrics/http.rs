//! The metrics listener's settings and the API's request counting (`ember-net` serves
//! `GET /metrics`).
//!
//! The listener is plain HTTP without authentication, on loopback by default: Prometheus
//! scrapes without SigV4 or client certificates, and the metrics name accounts and
//! functions but hold no secrets. Bind it elsewhere only on a network that only the
//! scraper reaches.

use std::sync::Arc;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::service::Service;

/// Where the metrics listener binds by default.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

pub use ember_net::exposition::{Format, MetricsListen};

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

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn listen_is_an_address_or_off() {
        assert_eq!("off".parse(), Ok(MetricsListen(None)));
        assert_eq!(
            DEFAULT_LISTEN.parse(),
            Ok(MetricsListen(Some(SocketAddr::from((
                [127, 0, 0, 1],
                9464
            )))))
        );
        assert!("localhost".parse::<MetricsListen>().is_err());
    }
}
