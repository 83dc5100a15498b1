//! `workers{state}`: the fleet's workers by state, counted when scraped so the gauge is
//! never stale and nothing has to keep it up to date.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use crate::fleet::state::Workers;
use ember_store::workers::WorkerState;

/// The live states; `gone` workers left for good and are not counted.
const STATES: [WorkerState; 3] = [
    WorkerState::Active,
    WorkerState::Draining,
    WorkerState::Dead,
];

#[derive(Debug)]
pub(super) struct WorkersByState(pub Workers);

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
