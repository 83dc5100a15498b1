//! `workers{state}`: the fleet's workers by state, counted when scraped so the gauge is
//! never stale and nothing has to keep it up to date.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use ember_store::workers::WorkerState;

use super::state::Workers;

/// The live states; `gone` workers left for good and are not counted.
const STATES: [WorkerState; 3] = [
    WorkerState::Active,
    WorkerState::Draining,
    WorkerState::Dead,
];

#[derive(Debug)]
pub struct WorkersByState(pub Workers);

impl Collector for WorkersByState {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let mut metric = encoder.encode_descriptor(
            "workers",
            "Workers known to control, by state.",
            None,
            MetricType::Gauge,
        )?;
        for state in STATES {
            let count = self.0.count(state) as i64;
            metric
                .encode_family(&[("state", state.as_str())])?
                .encode_gauge(&count)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::{http::Format, Metrics};

    #[test]
    fn counts_workers_by_state_when_scraped() {
        let workers = Workers::default();
        let metrics = Metrics::new([Box::new(WorkersByState(workers)) as Box<dyn Collector>]);
        let text = metrics.encode(Format::Prometheus);
        assert!(
            text.lines()
                .any(|l| l == r#"ember_control_workers{state="active"} 0"#),
            "{text}"
        );
    }
}
