//! The control service's Prometheus metrics: invocations as the router saw them (counted
//! there, so synchronous and asynchronous invocations alike), the API's HTTP requests, and
//! whatever collectors the service adds (the fleet's workers by state, read at scrape
//! time). `ember-net` serves them on their own plain-HTTP listener ([`http`] holds its
//! settings). `docs/metrics.md` lists every metric.

/// The metrics listener's settings and the formats it serves (`ember-net` serves
/// `GET /metrics`). The listener is plain HTTP without authentication, on loopback by
/// default: Prometheus scrapes without SigV4 or client certificates, and the metrics name
/// accounts and functions but hold no secrets. Bind it elsewhere only on a network that
/// only the scraper reaches.
pub mod http {
    /// Where the metrics listener binds by default.
    pub const DEFAULT_LISTEN: &str = "127.0.0.1:9464";

    pub use ember_net::exposition::{Format, MetricsListen};
}

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// Upper bounds (seconds) of the invocation duration buckets: from 100 µs (a warm
/// invocation's own cost) to 15 minutes (the longest timeout).
pub const DURATION_BUCKETS: [f64; 22] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
];

/// How an invocation through control ended: the `outcome` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    Success,
    /// The function failed (Lambda's `Unhandled` function errors).
    FunctionError,
    /// The worker could not run it (bad code, a crashed environment).
    ServiceError,
    /// Over the function's reserved concurrency.
    Throttled,
    NoWorker,
    /// Every worker tried was full (no room for another environment).
    NoCapacity,
    /// The worker failed after the invocation went out.
    WorkerFailed,
    /// No such function, version or alias.
    NotFound,
    /// Control's own failure (registry, grants, credentials).
    InternalError,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::FunctionError => "function_error",
            Outcome::ServiceError => "service_error",
            Outcome::Throttled => "throttled",
            Outcome::NoWorker => "no_worker",
            Outcome::NoCapacity => "no_capacity",
            Outcome::WorkerFailed => "worker_failed",
            Outcome::NotFound => "not_found",
            Outcome::InternalError => "internal_error",
        }
    }

    /// Whether a worker got the invocation, so its duration says something about the
    /// function rather than about a refusal.
    fn reached_a_worker(self) -> bool {
        matches!(
            self,
            Outcome::Success
                | Outcome::FunctionError
                | Outcome::ServiceError
                | Outcome::WorkerFailed
        )
    }
}

impl EncodeLabelValue for Outcome {
    fn encode(&self, encoder: &mut LabelValueEncoder) -> std::fmt::Result {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FunctionLabels {
    account: String,
    function: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InvocationLabels {
    account: String,
    function: String,
    outcome: Outcome,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    operation: String,
    status: u16,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;

/// The registry and the metrics recorded into it.
#[derive(Debug)]
pub struct Metrics {
    registry: Arc<Registry>,
    invocations: Family<InvocationLabels, Counter>,
    duration: HistogramFamily<FunctionLabels>,
    cold_starts: Family<FunctionLabels, Counter>,
    throttles: Family<FunctionLabels, Counter>,
    http_requests: Family<HttpLabels, Counter>,
}

impl Metrics {
    /// Registers every metric and `collectors`, which are read at each scrape.
    pub fn new(collectors: impl IntoIterator<Item = Box<dyn Collector>>) -> Metrics {
        let mut registry = Registry::with_prefix("ember_control");
        let invocations = Family::<InvocationLabels, Counter>::default();
        let duration: HistogramFamily<FunctionLabels> =
            Family::new_with_constructor(|| Histogram::new(DURATION_BUCKETS));
        let cold_starts = Family::<FunctionLabels, Counter>::default();
        let throttles = Family::<FunctionLabels, Counter>::default();
        let http_requests = Family::<HttpLabels, Counter>::default();
        registry.register(
            "invocations",
            "Invocations routed by control, by function and outcome",
            invocations.clone(),
        );
        registry.register_with_unit(
            "invocation_duration",
            "Time from control taking an invocation to its answer, for invocations that \
             reached a worker",
            Unit::Seconds,
            duration.clone(),
        );
        registry.register(
            "cold_starts",
            "Invocations that created a new execution environment",
            cold_starts.clone(),
        );
        registry.register(
            "throttles",
            "Invocations refused over the function's reserved concurrency",
            throttles.clone(),
        );
        registry.register(
            "http_requests",
            "Lambda API requests, by route and HTTP status",
            http_requests.clone(),
        );
        for collector in collectors {
            registry.register_collector(collector);
        }
        Metrics {
            registry: Arc::new(registry),
            invocations,
            duration,
            cold_starts,
            throttles,
            http_requests,
        }
    }

    /// Counts one invocation of `account`'s `function` that ended with `outcome` after
    /// `took`; `cold_start` when it created a new execution environment.
    pub fn record_invocation(
        &self,
        account: &str,
        function: &str,
        outcome: Outcome,
        cold_start: bool,
        took: Duration,
    ) {
        // Names that do not exist come from callers: labelling by them would let anyone
        // add series without bound.
        let function = if outcome == Outcome::NotFound {
            ""
        } else {
            function
        };
        let labels = FunctionLabels {
            account: account.to_owned(),
            function: function.to_owned(),
        };
        self.invocations
            .get_or_create(&InvocationLabels {
                account: labels.account.clone(),
                function: labels.function.clone(),
                outcome,
            })
            .inc();
        if outcome.reached_a_worker() {
            self.duration
                .get_or_create(&labels)
                .observe(took.as_secs_f64());
        }
        if outcome == Outcome::Throttled {
            self.throttles.get_or_create(&labels).inc();
        }
        if cold_start {
            self.cold_starts.get_or_create(&labels).inc();
        }
    }

    /// Counts one API request: `operation` is its route (`METHOD /path/{param}`).
    pub fn record_http(&self, operation: String, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels { operation, status })
            .inc();
    }

    /// The registry the metrics listener serves.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Everything, in the exposition `format`; an empty page if a metric fails to encode.
    pub fn encode(&self, format: http::Format) -> String {
        format.encode(&self.registry).unwrap_or_else(|e| {
            tracing::error!(error = %e, "encoding the metrics failed");
            String::new()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_into_the_exposition() {
        let metrics = Metrics::new([]);
        let ms = Duration::from_millis(3);
        let account = "111122223333";
        metrics.record_invocation(account, "f", Outcome::Success, true, ms);
        metrics.record_invocation(account, "f", Outcome::Success, false, ms);
        metrics.record_invocation(account, "f", Outcome::Throttled, false, ms);
        metrics.record_invocation(account, "nope", Outcome::NotFound, false, ms);
        metrics.record_http(
            "POST /2015-03-31/functions/{function}/invocations".into(),
            200,
        );
        let text = metrics.encode(http::Format::Prometheus);
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(
                r#"ember_control_invocations_total{account="111122223333",function="f",outcome="success"} 2"#
            ),
            "{text}"
        );
        assert!(has(
            r#"ember_control_invocations_total{account="111122223333",function="f",outcome="throttled"} 1"#
        ));
        assert!(has(
            r#"ember_control_invocations_total{account="111122223333",function="",outcome="not_found"} 1"#
        ));
        assert!(!text.contains("nope"), "unknown names make no series");
        assert!(has(
            r#"ember_control_cold_starts_total{account="111122223333",function="f"} 1"#
        ));
        assert!(has(
            r#"ember_control_throttles_total{account="111122223333",function="f"} 1"#
        ));
        // Only the two that reached a worker are timed, both in the 5 ms bucket.
        assert!(has(
            r#"ember_control_invocation_duration_seconds_count{account="111122223333",function="f"} 2"#
        ));
        assert!(
            has(
                r#"ember_control_invocation_duration_seconds_bucket{account="111122223333",function="f",le="0.005"} 2"#
            ),
            "{text}"
        );
        assert!(has(
            r#"ember_control_http_requests_total{operation="POST /2015-03-31/functions/{function}/invocations",status="200"} 1"#
        ));
        let open = metrics.encode(http::Format::OpenMetrics);
        assert!(open.ends_with("# EOF\n"), "{open}");
        assert!(open.contains("# UNIT ember_control_invocation_duration_seconds seconds\n"));
    }

    #[test]
    fn listen_is_an_address_or_off() {
        use super::http::{MetricsListen, DEFAULT_LISTEN};
        let loopback = std::net::SocketAddr::from(([127, 0, 0, 1], 9464));
        assert_eq!("off".parse(), Ok(MetricsListen(None)));
        assert_eq!(DEFAULT_LISTEN.parse(), Ok(MetricsListen(Some(loopback))));
        assert!("localhost".parse::<MetricsListen>().is_err());
    }
}
