//! Prometheus exposition, shared by emberd's metrics listener and ember-control's: the
//! `--metrics-listen` value, the text format a scraper asked for, the encoding, and the
//! plain-HTTP listener that serves `GET /metrics`.

use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

/// `--metrics-listen`: an address (port 0 picks a free one), or `off`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MetricsListen(pub Option<SocketAddr>);

impl FromStr for MetricsListen {
    type Err = String;

    fn from_str(text: &str) -> Result<MetricsListen, String> {
        if text == "off" {
            return Ok(MetricsListen(None));
        }
        text.parse()
            .map(|addr| MetricsListen(Some(addr)))
            .map_err(|_| format!("{text:?} is neither an ADDRESS:PORT nor `off`"))
    }
}

/// The two text formats prometheus-client writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// OpenMetrics 1.0, which Prometheus asks for first.
    OpenMetrics,
    /// Prometheus' classic text format 0.0.4, which every scraper reads.
    Prometheus,
}

impl Format {
    /// OpenMetrics when the `Accept` header lists it (with a non-zero quality), else the
    /// classic format.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let asks_for_openmetrics = accept.unwrap_or_default().split(',').any(|range| {
            let mut parts = range.split(';').map(str::trim);
            let media_type = parts.next().unwrap_or_default();
            media_type.eq_ignore_ascii_case("application/openmetrics-text")
                && !parts.any(|param| {
                    param
                        .strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q <= 0.0)
                })
        });
        if asks_for_openmetrics {
            Format::OpenMetrics
        } else {
            Format::Prometheus
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Prometheus => prometheus_client::encoding::prometheus_text::CONTENT_TYPE,
        }
    }

    /// Everything in `registry`, in this format. Writing into a String fails only if a
    /// metric's own encoding does; the scraper then gets an empty page, and this the error.
    pub fn encode(self, registry: &Registry) -> Result<String, std::fmt::Error> {
        let mut text = String::new();
        match self {
            Format::OpenMetrics => prometheus_client::encoding::text::encode(&mut text, registry),
            Format::Prometheus => {
                prometheus_client::encoding::prometheus_text::encode(&mut text, registry)
            }
        }
        .map(|()| text)
    }
}

/// Serves `GET /metrics` from `registry` on `listener` until `shutdown` completes. The
/// listener is plain HTTP without authentication: metrics name accounts and functions but
/// hold no secrets, and the default address is loopback.
pub async fn serve(
    listener: TcpListener,
    registry: Arc<Registry>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let app = Router::new()
        .route("/metrics", get(scrape))
        .with_state(registry);
    if let Err(e) = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "the metrics listener failed");
    }
}

/// OpenMetrics when the scraper lists it in `Accept` (Prometheus does), else Prometheus'
/// classic text format, which every scraper reads.
async fn scrape(State(registry): State<Arc<Registry>>, headers: HeaderMap) -> Response {
    let accept = headers
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok());
    let format = Format::negotiate(accept);
    let text = format.encode(&registry).unwrap_or_else(|e| {
        tracing::error!(error = %e, "encoding the metrics failed");
        String::new()
    });
    ([(header::CONTENT_TYPE, format.content_type())], text).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openmetrics_only_when_asked_for() {
        let prometheus = "application/openmetrics-text;version=1.0.0,\
                          application/openmetrics-text;version=0.0.1;q=0.75,\
                          text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(prometheus)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Prometheus);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Prometheus);
        assert_eq!(
            Format::negotiate(Some("text/plain; version=0.0.4")),
            Format::Prometheus
        );
        assert_eq!(
            Format::negotiate(Some("application/openmetrics-text; q=0, text/plain")),
            Format::Prometheus
        );
    }

    #[test]
    fn listen_is_an_address_or_off() {
        assert_eq!("off".parse(), Ok(MetricsListen(None)));
        assert_eq!(
            "127.0.0.1:9465".parse(),
            Ok(MetricsListen(Some(SocketAddr::from((
                [127, 0, 0, 1],
                9465
            )))))
        );
        assert!("localhost".parse::<MetricsListen>().is_err());
    }
}
