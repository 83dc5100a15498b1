//! Which worker runs an invocation. Only live workers are considered: active (not
//! draining, dead or gone), heard from within the silence limit, and not within the drain
//! margin of their lease's end. Among them:
//!
//! 1. one with an idle environment of exactly this version and configuration (its last
//!    heartbeat said so, or an invocation this instance sent there just left one), the
//!    least busy first: a warm start;
//! 2. otherwise the one best placed to create an environment: not full (environments
//!    below its maximum, and room for the function's `MemorySize` beside the guest memory
//!    of its environments), then the fewest invocations in flight per vCPU, then the
//!    fewest environments.
//!
//! A full worker is still tried last: it may shut down an idle environment to make room,
//! or refuse (and the next one is tried). A worker whose whole guest memory is less than
//! the function's `MemorySize` is never given it: it could not create the environment.
//!
//! Ties go to the lowest worker id, so the choice is deterministic.

use std::collections::HashMap;

use ember_fleet::messages::VersionKey;

use crate::fleet::state::WorkerView;
use crate::fleet::FleetSettings;

/// What an invocation needs of a worker.
#[derive(Clone, Copy, Debug)]
pub struct Criteria<'a> {
    pub key: &'a VersionKey,
    /// Unix seconds.
    pub now: u64,
    pub settings: &'a FleetSettings,
    /// The function's memory (MiB), what one environment of it takes.
    pub memory_mib: u64,
    /// Workers already tried for this invocation.
    pub exclude: &'a [String],
}

/// The id of the worker to send the invocation to, if any is live.
pub fn choose(workers: &HashMap<String, WorkerView>, criteria: &Criteria<'_>) -> Option<String> {
    let live = workers.values().filter(|w| eligible(w, criteria));
    let warm = live
        .clone()
        .filter(|w| w.idle.get(criteria.key).is_some_and(|n| *n > 0))
        .min_by(|a, b| (a.routed, &a.id).cmp(&(b.routed, &b.id)));
    warm.or_else(|| live.min_by_key(|w| placement(w, criteria.memory_mib)))
        .map(|w| w.id.clone())
}

fn eligible(worker: &WorkerView, criteria: &Criteria<'_>) -> bool {
    worker.routable(criteria.settings, criteria.now)
        && !criteria.exclude.contains(&worker.id)
        && criteria.memory_mib <= worker.capacity.memory_mib
}

/// Orders workers for a cold start of a function of `memory_mib`: lower is better.
fn placement(worker: &WorkerView, memory_mib: u64) -> (bool, u64, u32, String) {
    let full = worker.environments >= worker.capacity.max_environments
        || worker.memory_in_use.saturating_add(memory_mib) > worker.capacity.memory_mib;
    let load = u64::from(worker.routed) * 1000 / u64::from(worker.capacity.vcpus.max(1));
    (full, load, worker.environments, worker.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::fixtures::{version_key as key, worker_row};
    use crate::fleet::state::Workers;
    use ember_fleet::messages::{HeartbeatRequest, InventoryEntry};
    use ember_store::workers::WorkerState;
    use std::time::Duration;

    fn fleet(ids: &[&str], lease: u64) -> Workers {
        let workers = Workers::default();
        for id in ids {
            workers.add(&worker_row(id, 2, lease));
        }
        workers
    }

    fn pick(workers: &Workers, key: &VersionKey, now: u64, exclude: &[String]) -> Option<String> {
        pick_memory(workers, key, now, exclude, 128)
    }

    fn pick_memory(
        workers: &Workers,
        key: &VersionKey,
        now: u64,
        exclude: &[String],
        memory_mib: u64,
    ) -> Option<String> {
        let settings = FleetSettings {
            heartbeat: Duration::from_secs(1),
            missed_heartbeats: 3,
            lease: Duration::from_secs(100),
            ..FleetSettings::default()
        };
        let criteria = Criteria {
            key,
            now,
            settings: &settings,
            memory_mib,
            exclude,
        };
        let claim = workers.claim(key, memory_mib, |all| choose(all, &criteria))?;
        let id = claim.worker_id.clone();
        claim.finish(true);
        Some(id)
    }

    #[test]
    fn prefers_warm_then_least_loaded_and_skips_the_unusable() {
        let workers = fleet(&["w-a", "w-b"], 1000);
        let v1 = key("1");
        // Cold: spread by environments.
        assert_eq!(pick(&workers, &v1, 0, &[]).as_deref(), Some("w-a"));
        // Warm: back to the environment w-a just left idle.
        assert_eq!(pick(&workers, &v1, 0, &[]).as_deref(), Some("w-a"));
        // Another version goes where there are fewer environments.
        assert_eq!(pick(&workers, &key("2"), 0, &[]).as_deref(), Some("w-b"));

        // A heartbeat's inventory counts as warm (for what control placed there).
        workers.expect("w-b", &key("3"), 128, 1);
        let report = HeartbeatRequest {
            inventory: vec![InventoryEntry {
                key: key("3"),
                idle: 1,
                busy: 0,
            }],
            in_flight: 0,
            environments: 1,
            draining: false,
            provision_failures: Vec::new(),
        };
        workers.heartbeat("w-b", &report, 0, |_| false).unwrap();
        assert_eq!(pick(&workers, &key("3"), 0, &[]).as_deref(), Some("w-b"));

        // Excluded, dead and draining workers get nothing.
        let tried = vec!["w-a".to_owned()];
        assert_eq!(pick(&workers, &v1, 0, &tried).as_deref(), Some("w-b"));
        workers.set_state("w-b", WorkerState::Dead);
        assert_eq!(pick(&workers, &v1, 0, &tried), None);
        workers.set_state("w-b", WorkerState::Draining);
        assert_eq!(pick(&workers, &v1, 0, &tried), None);
        // Within the drain margin (5 s of a 100 s lease) of the lease's end.
        assert_eq!(pick(&workers, &v1, 994, &[]).as_deref(), Some("w-a"));
        assert_eq!(pick(&workers, &v1, 995, &[]), None);
    }

    #[test]
    fn memory_in_use_counts_a_worker_full() {
        let workers = Workers::default();
        for id in ["w-a", "w-b"] {
            workers.add(&worker_row(id, 8, 1000));
        }
        // w-a: one 768 MiB environment of its 1024; w-b: three of 64 MiB.
        let big = key("big");
        let claim = |id: &str, key: &VersionKey, memory_mib| {
            let id = id.to_owned();
            workers
                .claim(key, memory_mib, |_| Some(id))
                .unwrap()
                .finish(true);
        };
        claim("w-a", &big, 768);
        for small in ["s1", "s2", "s3"] {
            claim("w-b", &key(small), 64);
        }
        // With fewer environments w-a would come first, but 512 MiB more do not fit there.
        let v1 = key("1");
        assert_eq!(
            pick_memory(&workers, &v1, 0, &[], 512).as_deref(),
            Some("w-b")
        );
        assert_eq!(
            pick_memory(&workers, &key("2"), 0, &[], 128).as_deref(),
            Some("w-a")
        );

        // A heartbeat replaces the view: w-a's big environment is gone.
        let report = HeartbeatRequest {
            inventory: Vec::new(),
            in_flight: 0,
            environments: 0,
            draining: false,
            provision_failures: Vec::new(),
        };
        workers.heartbeat("w-a", &report, 0, |_| false).unwrap();
        assert_eq!(
            pick_memory(&workers, &key("3"), 0, &[], 512).as_deref(),
            Some("w-a")
        );
    }

    #[test]
    fn a_worker_that_refused_for_room_counts_full_until_it_heartbeats() {
        let workers = fleet(&["w-a", "w-b"], 1000);
        let v1 = key("1");
        let claim = workers.claim(&v1, 128, |_| Some("w-a".to_owned())).unwrap();
        claim.refused();
        assert_eq!(
            workers.state("w-a"),
            Some(WorkerState::Active),
            "not doubted"
        );
        // w-a has fewer environments than w-b would after this, but counts as full.
        assert_eq!(pick(&workers, &v1, 0, &[]).as_deref(), Some("w-b"));
        assert_eq!(pick(&workers, &key("2"), 0, &[]).as_deref(), Some("w-b"));
        // Full workers are still the last resort.
        let tried = vec!["w-b".to_owned()];
        assert_eq!(pick(&workers, &key("3"), 0, &tried).as_deref(), Some("w-a"));
    }

    #[test]
    fn a_function_larger_than_a_workers_memory_never_goes_there() {
        let workers = Workers::default();
        let mut small = worker_row("w-a", 4, 1000);
        small.capacity.memory_mib = 512;
        workers.add(&small);
        workers.add(&worker_row("w-b", 4, 1000));
        let v1 = key("1");
        // w-a is first by id, but has only 512 MiB in all.
        assert_eq!(
            pick_memory(&workers, &v1, 0, &[], 1024).as_deref(),
            Some("w-b")
        );
        assert_eq!(
            pick_memory(&workers, &key("2"), 0, &[], 512).as_deref(),
            Some("w-a")
        );
        let tried = vec!["w-b".to_owned()];
        assert_eq!(pick_memory(&workers, &key("3"), 0, &tried, 1024), None);
    }
}
