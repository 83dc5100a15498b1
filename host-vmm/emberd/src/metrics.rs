//! emberd's Prometheus metrics: invocations as this worker ran them ([`InvokeMetrics`],
//! recorded as each one ends), and the environment pool, in-flight invocations and
//! the draining flag, read when scraped. Served as `GET /metrics` on a plain-HTTP
//! listener, loopback by default: Prometheus scrapes without client certificates, and
//! nothing here is secret. `docs/metrics.md` lists every metric.

use std::fmt;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use ember_fleet::messages::{InvokeResponse, Status};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::{Registry, Unit};

use crate::Worker;

/// Upper bounds (seconds) of the duration buckets: 100 µs to 15 minutes (the longest
/// timeout), as control's.
const DURATION_BUCKETS: [f64; 22] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0,
];

/// The error type counted for failures that are the platform's, not the function's.
const SERVICE_ERROR_TYPE: &str = "ServiceException";

/// What the worker counts as it runs invocations; clones share the counts.
#[derive(Clone, Debug)]
pub struct InvokeMetrics {
    invocations: Family<[(&'static str, &'static str); 1], Counter>,
    errors: Family<[(&'static str, String); 1], Counter>,
    cold_starts: Counter,
    duration: Histogram,
    init_duration: Histogram,
}

impl Default for InvokeMetrics {
    fn default() -> InvokeMetrics {
        InvokeMetrics {
            invocations: Family::default(),
            errors: Family::default(),
            cold_starts: Counter::default(),
            duration: Histogram::new(DURATION_BUCKETS),
            init_duration: Histogram::new(DURATION_BUCKETS),
        }
    }
}

impl InvokeMetrics {
    /// Counts one invocation that took `took` on this worker and ended in `response`.
    pub fn record(&self, response: &InvokeResponse, took: Duration) {
        self.invocations
            .get_or_create(&[("outcome", outcome(response.status))])
            .inc();
        if let Some(error_type) = error_type(response) {
            self.errors
                .get_or_create(&[("error_type", error_type.to_owned())])
                .inc();
        }
        self.duration.observe(took.as_secs_f64());
        if let Some(init_us) = response.init_us {
            self.cold_starts.inc();
            self.init_duration.observe(init_us as f64 / 1e6);
        }
    }

    /// Counts one invocation turned away for want of room (nothing ran).
    pub fn record_refused(&self) {
        self.invocations
            .get_or_create(&[("outcome", "at_capacity")])
            .inc();
    }

    fn register(&self, registry: &mut Registry) {
        registry.register(
            "invocations",
            "Invocations this worker ran, by outcome",
            self.invocations.clone(),
        );
        registry.register(
            "invocation_errors",
            "Failed invocations by Lambda error type (ServiceException: the platform's)",
            self.errors.clone(),
        );
        registry.register(
            "cold_starts",
            "Invocations that created a new execution environment",
            self.cold_starts.clone(),
        );
        registry.register_with_unit(
            "invocation_duration",
            "Time the worker spent on an invocation, from its request to its answer",
            Unit::Seconds,
            self.duration.clone(),
        );
        registry.register_with_unit(
            "init_duration",
            "Time a cold start took to create and initialize its environment",
            Unit::Seconds,
            self.init_duration.clone(),
        );
    }
}

/// The `outcome` label: the answer's status.
fn outcome(status: Status) -> &'static str {
    match status {
        Status::Success => "success",
        Status::FunctionError => "function_error",
        Status::ServiceError => "service_error",
    }
}

/// The `error_type` label of a failed invocation; `None` for a success.
fn error_type(response: &InvokeResponse) -> Option<&str> {
    match response.status {
        Status::Success => None,
        Status::FunctionError => Some(response.error_type.as_deref().unwrap_or("Unhandled")),
        Status::ServiceError => Some(SERVICE_ERROR_TYPE),
    }
}

/// The gauges, read from the worker at each scrape.
struct WorkerGauges(Arc<Worker>);

impl fmt::Debug for WorkerGauges {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WorkerGauges")
    }
}

impl Collector for WorkerGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let worker = &self.0;
        let pool = worker.functions.pool();
        let totals = pool.totals();
        let mut environments = encoder.encode_descriptor(
            "environments",
            "Execution environments, by state.",
            None,
            MetricType::Gauge,
        )?;
        for (state, count) in [("idle", totals.idle), ("busy", totals.busy)] {
            environments
                .encode_family(&[("state", state)])?
                .encode_gauge(&(count as i64))?;
        }
        let mut spares = encoder.encode_descriptor(
            "spare_vms",
            "Warmed VMs ready for new environments, by guest memory size in MiB.",
            None,
            MetricType::Gauge,
        )?;
        for (memory_mib, count) in pool.spares_by_memory() {
            spares
                .encode_family(&[("memory_mib", memory_mib)])?
                .encode_gauge(&(count as i64))?;
        }
        encoder
            .encode_descriptor(
                "in_flight",
                "Invocations running now.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&worker.in_flight())?;
        let draining = worker.draining.load(Ordering::SeqCst);
        encoder
            .encode_descriptor(
                "draining",
                "1 once the worker takes no new invocations (its lease is ending).",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&i64::from(draining))?;
        Ok(())
    }
}

/// Every metric of `worker`.
pub fn registry(worker: Arc<Worker>) -> Registry {
    let mut registry = Registry::with_prefix("emberd");
    worker.functions.metrics().register(&mut registry);
    registry.register_collector(Box::new(WorkerGauges(worker)));
    registry
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: Status, error_type: Option<&str>, init_us: Option<u64>) -> InvokeResponse {
        InvokeResponse {
            status,
            payload: String::new(),
            error_type: error_type.map(str::to_owned),
            log_tail: String::new(),
            log: String::new(),
            environment: 0,
            duration_us: 10,
            init_us,
            max_memory_used_mib: 1,
        }
    }

    #[test]
    fn outcomes_and_error_types_label_the_answer() {
        assert_eq!(outcome(Status::Success), "success");
        assert_eq!(outcome(Status::FunctionError), "function_error");
        assert_eq!(outcome(Status::ServiceError), "service_error");
        let trap = response(Status::FunctionError, Some("Runtime.Trap"), None);
        assert_eq!(error_type(&trap), Some("Runtime.Trap"));
        let crashed = response(Status::ServiceError, None, None);
        assert_eq!(error_type(&crashed), Some("ServiceException"));
        assert_eq!(error_type(&response(Status::Success, None, None)), None);
    }

    #[test]
    fn records_into_the_exposition() {
        let metrics = InvokeMetrics::default();
        let ms = Duration::from_millis(2);
        metrics.record(&response(Status::Success, None, Some(400)), ms);
        metrics.record(&response(Status::Success, None, None), ms);
        let trap = response(Status::FunctionError, Some("Runtime.Trap"), None);
        metrics.record(&trap, ms);
        let mut registry = Registry::with_prefix("emberd");
        metrics.register(&mut registry);
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let has = |line: &str| text.lines().any(|l| l == line);
        assert!(
            has(r#"emberd_invocations_total{outcome="success"} 2"#),
            "{text}"
        );
        assert!(has(
            r#"emberd_invocations_total{outcome="function_error"} 1"#
        ));
        assert!(has(
            r#"emberd_invocation_errors_total{error_type="Runtime.Trap"} 1"#
        ));
        assert!(has("emberd_cold_starts_total 1"));
        assert!(has("emberd_invocation_duration_seconds_count 3"));
        assert!(has(r#"emberd_init_duration_seconds_bucket{le="0.0005"} 1"#));
        assert!(has(
            r#"emberd_init_duration_seconds_bucket{le="0.00025"} 0"#
        ));
    }
}
