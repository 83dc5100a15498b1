//! The live view of the fleet: each worker's state, what its last heartbeat reported
//! (idle environments per version, environments in all), and what this control instance
//! learnt since: the invocations it sent there and not yet answered, and the environments
//! those left idle. The provisioned versions a worker cannot initialize, and why, come
//! with each heartbeat too. A heartbeat replaces the reported part; the rest keeps the view
//! current between heartbeats, so that a burst of invocations of one version finds the
//! environments its first invocations just created.
//!
//! A worker is not believed beyond what control placed there: per version, the cold
//! invocations this instance sent it and the provisioned environments it was told to keep
//! ([`WorkerView::placed`]). A heartbeat claiming environments of other versions, or more
//! of one, cannot draw that version's invocations (and their payloads, grants and role
//! credentials) to a rogue worker; nor can it claim more environments than its
//! registration's maximum. (A restarted control believes a worker's environments again
//! once it has placed them anew.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ember_fleet::messages::{Capacity, HeartbeatRequest, VersionKey};

use super::FleetSettings;
use ember_store::workers::{WorkerRow, WorkerState, PERSIST_EVERY};

/// Longest provisioning failure reason kept (bytes): the worker is untrusted, and the
/// reason reaches API clients as a `StatusReason`.
const MAX_FAILURE_REASON: usize = 1024;

/// One worker, live.
#[derive(Clone, Debug)]
pub struct WorkerView {
    pub id: String,
    pub address: String,
    pub capacity: Capacity,
    pub state: WorkerState,
    pub lease_expires_at: u64,
    pub last_heartbeat: Instant,
    /// Idle environments per version, as far as this instance knows.
    pub idle: HashMap<VersionKey, u32>,
    /// Environments per version (idle or busy), as its last heartbeat reported them.
    pub held: HashMap<VersionKey, u32>,
    /// Provisioned versions it cannot create environments of, and why, as its last
    /// heartbeat reported them.
    pub provision_failures: HashMap<VersionKey, String>,
    /// Environments per version control asked it for (cold invocations sent, provisioned
    /// shares), at most its maximum: the most of each its heartbeats are believed.
    pub placed: HashMap<VersionKey, u32>,
    /// Guest memory (MiB) of each version placed here, from the configuration it was sent.
    pub sizes: HashMap<VersionKey, u64>,
    /// Environments alive, as far as this instance knows.
    pub environments: u32,
    /// Their guest memory (MiB): what its last heartbeat reported of the versions control
    /// placed there, by their sizes, and the cold invocations sent since.
    pub memory_in_use: u64,
    /// Invocations this instance sent and that have not answered yet.
    pub routed: u32,
    /// When `last_heartbeat` was last written to SQL (Unix seconds).
    persisted_at: u64,
}

impl WorkerView {
    /// Whether the worker may be given work at `now` (Unix seconds): active, heard from
    /// within the silence limit, and not within the drain margin of its lease's end.
    pub fn routable(&self, settings: &FleetSettings, now: u64) -> bool {
        self.state == WorkerState::Active
            && self.last_heartbeat.elapsed() <= settings.silence_limit()
            && !settings.draining(self.lease_expires_at, now)
    }
}

/// What a heartbeat changed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Heard {
    pub lease_expires_at: u64,
    pub state: WorkerState,
    /// The row needs writing (state changed, or stored heartbeat too old).
    pub persist: bool,
}

/// Every known worker, shared by the fleet listener, the router and the lease watcher.
#[derive(Clone, Debug, Default)]
pub struct Workers {
    inner: Arc<Mutex<HashMap<String, WorkerView>>>,
}

impl Workers {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, WorkerView>> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds (or replaces) a worker from its row, as just heard of: a restarted control
    /// gives every stored worker a full dead-detection window to heartbeat.
    pub fn add(&self, row: &WorkerRow) {
        let view = WorkerView {
            id: row.id.clone(),
            address: row.address.clone(),
            capacity: row.capacity.clone(),
            state: row.state,
            lease_expires_at: row.lease_expires_at,
            last_heartbeat: Instant::now(),
            idle: HashMap::new(),
            held: HashMap::new(),
            provision_failures: HashMap::new(),
            placed: HashMap::new(),
            sizes: HashMap::new(),
            environments: 0,
            memory_in_use: 0,
            routed: 0,
            persisted_at: row.last_heartbeat,
        };
        self.lock().insert(row.id.clone(), view);
    }

    /// The address worker `id` registered, if known and not departed.
    pub fn address(&self, id: &str) -> Option<String> {
        let workers = self.lock();
        let worker = workers.get(id)?;
        (!worker.state.departed()).then(|| worker.address.clone())
    }

    /// Whether worker `id` is known and has not departed (left or been revoked).
    pub fn stands(&self, id: &str) -> bool {
        self.state(id).is_some_and(|state| !state.departed())
    }

    /// A worker's state, if known.
    pub fn state(&self, id: &str) -> Option<WorkerState> {
        self.lock().get(id).map(|w| w.state)
    }

    /// Workers in each state (for logs and tests).
    pub fn count(&self, state: WorkerState) -> usize {
        self.lock().values().filter(|w| w.state == state).count()
    }

    /// Takes a heartbeat from worker `id` at `now` (Unix seconds): replaces what it reported,
    /// as far as control placed it, and moves it to `Draining` when it says so or
    /// `drain(lease_expires_at)`, else back to `Active` (a dead worker that heartbeats again
    /// is alive). `None` for an unknown or departed worker.
    pub fn heartbeat(
        &self,
        id: &str,
        report: &HeartbeatRequest,
        now: u64,
        drain: impl FnOnce(u64) -> bool,
    ) -> Option<Heard> {
        let mut workers = self.lock();
        let worker = workers.get_mut(id)?;
        if worker.state.departed() {
            return None;
        }
        worker.last_heartbeat = Instant::now();
        let placed = &worker.placed;
        let believed = |key: &VersionKey, n: u32| n.min(placed.get(key).copied().unwrap_or(0));
        let mut held = HashMap::new();
        let mut idle = HashMap::new();
        for entry in &report.inventory {
            let all = believed(&entry.key, entry.idle.saturating_add(entry.busy));
            if all > 0 {
                held.insert(entry.key.clone(), all);
            }
            if entry.idle.min(all) > 0 {
                idle.insert(entry.key.clone(), entry.idle.min(all));
            }
        }
        worker.provision_failures = report
            .provision_failures
            .iter()
            .filter(|failure| placed.contains_key(&failure.key))
            .map(|failure| (failure.key.clone(), bounded(&failure.reason)))
            .collect();
        worker.memory_in_use = held
            .iter()
            .map(|(key, n)| {
                u64::from(*n).saturating_mul(worker.sizes.get(key).copied().unwrap_or(0))
            })
            .fold(0, u64::saturating_add);
        worker.held = held;
        worker.idle = idle;
        worker.environments = report.environments.min(worker.capacity.max_environments);
        let state = if report.draining || drain(worker.lease_expires_at) {
            WorkerState::Draining
        } else {
            WorkerState::Active
        };
        let persist = state != worker.state || now >= worker.persisted_at + PERSIST_EVERY;
        worker.state = state;
        if persist {
            worker.persisted_at = now;
        }
        Some(Heard {
            lease_expires_at: worker.lease_expires_at,
            state,
            persist,
        })
    }

    /// Worker `id` was told to keep `count` environments of `key`, each of `memory_mib`
    /// (provisioned concurrency): its heartbeats are believed that far.
    pub fn expect(&self, id: &str, key: &VersionKey, memory_mib: u64, count: u32) {
        if let Some(worker) = self.lock().get_mut(id) {
            worker.sizes.insert(key.clone(), memory_mib);
            let count = count.min(worker.capacity.max_environments);
            let placed = worker.placed.entry(key.clone()).or_default();
            *placed = (*placed).max(count);
        }
    }

    /// Moves worker `id` to `state`; whether it changed. A revoked worker stays revoked.
    pub fn set_state(&self, id: &str, state: WorkerState) -> bool {
        match self.lock().get_mut(id) {
            Some(worker) if worker.state != state && worker.state != WorkerState::Revoked => {
                worker.state = state;
                true
            }
            _ => false,
        }
    }

    /// Marks dead every active or draining worker silent for `silence`; returns them.
    pub fn mark_silent_dead(&self, silence: Duration) -> Vec<String> {
        let mut dead = Vec::new();
        for worker in self.lock().values_mut() {
            let live = matches!(worker.state, WorkerState::Active | WorkerState::Draining);
            if live && worker.last_heartbeat.elapsed() > silence {
                worker.state = WorkerState::Dead;
                worker.idle.clear();
                worker.held.clear();
                worker.provision_failures.clear();
                dead.push(worker.id.clone());
            }
        }
        dead
    }

    /// What `read` makes of every worker, under the lock.
    pub fn read<R>(&self, read: impl FnOnce(&HashMap<String, WorkerView>) -> R) -> R {
        read(&self.lock())
    }

    /// Sends an invocation of `key` (a function of `memory_mib`) to the worker `choose`
    /// picks among all workers, and counts it there until the returned claim is finished
    /// or dropped.
    pub fn claim(
        &self,
        key: &VersionKey,
        memory_mib: u64,
        choose: impl FnOnce(&HashMap<String, WorkerView>) -> Option<String>,
    ) -> Option<Claim> {
        let mut workers = self.lock();
        let id = choose(&workers)?;
        let worker = workers.get_mut(&id)?;
        worker.routed += 1;
        let warm = match worker.idle.get_mut(key) {
            Some(idle) => {
                *idle -= 1;
                if *idle == 0 {
                    worker.idle.remove(key);
                }
                true
            }
            None => {
                worker.environments += 1;
                worker.memory_in_use = worker.memory_in_use.saturating_add(memory_mib);
                worker.sizes.insert(key.clone(), memory_mib);
                let max = worker.capacity.max_environments;
                let placed = worker.placed.entry(key.clone()).or_default();
                *placed = placed.saturating_add(1).min(max);
                false
            }
        };
        Some(Claim {
            workers: self.clone(),
            worker_id: id,
            address: worker.address.clone(),
            key: key.clone(),
            memory_mib,
            warm,
        })
    }
}

/// `reason` cut to [`MAX_FAILURE_REASON`] bytes, on a character boundary.
fn bounded(reason: &str) -> String {
    reason[..reason.floor_char_boundary(MAX_FAILURE_REASON)].to_owned()
}

/// One invocation sent to one worker.
#[derive(Debug)]
pub struct Claim {
    workers: Workers,
    pub worker_id: String,
    pub address: String,
    key: VersionKey,
    memory_mib: u64,
    /// It was meant for an idle environment there.
    pub warm: bool,
}

impl Claim {
    /// The invocation answered; `kept` when its environment stays for the next one.
    pub fn finish(self, kept: bool) {
        let mut workers = self.workers.lock();
        if let Some(worker) = workers.get_mut(&self.worker_id) {
            if kept {
                *worker.idle.entry(self.key.clone()).or_default() += 1;
            } else {
                worker.environments = worker.environments.saturating_sub(1);
                worker.memory_in_use = worker.memory_in_use.saturating_sub(self.memory_mib);
            }
        }
    }

    /// The worker had no room: it counts as full until its next heartbeat says otherwise.
    /// (A warm claim found the idle environment gone as well.)
    pub fn refused(self) {
        let mut workers = self.workers.lock();
        if let Some(worker) = workers.get_mut(&self.worker_id) {
            worker.environments = worker.capacity.max_environments;
            worker.idle.remove(&self.key);
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if let Some(worker) = self.workers.lock().get_mut(&self.worker_id) {
            worker.routed = worker.routed.saturating_sub(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::fixtures::{version_key, worker_row};
    use ember_fleet::messages::{InventoryEntry, ProvisionFailure};

    #[test]
    fn tracks_idle_environments_between_heartbeats() {
        let workers = Workers::default();
        workers.add(&worker_row("w-1", 8, 1000));
        let first = workers
            .claim(&version_key("1"), 128, |_| Some("w-1".into()))
            .unwrap();
        assert!(!first.warm);
        first.finish(true);
        let second = workers
            .claim(&version_key("1"), 128, |_| Some("w-1".into()))
            .unwrap();
        assert!(second.warm, "the environment the first left idle");
        let routed = |w: &Workers| w.lock()["w-1"].routed;
        assert_eq!(routed(&workers), 1);
        drop(second);
        assert_eq!(routed(&workers), 0);
        assert!(!workers.lock()["w-1"].idle.contains_key(&version_key("1")));

        let report = HeartbeatRequest {
            inventory: vec![InventoryEntry {
                key: version_key("1"),
                idle: 2,
                busy: 0,
            }],
            in_flight: 0,
            environments: 2,
            draining: false,
            provision_failures: Vec::new(),
        };
        let heard = workers.heartbeat("w-1", &report, 10, |_| false).unwrap();
        assert_eq!(heard.state, WorkerState::Active);
        assert!(heard.persist, "not written for 10 s");
        assert!(
            !workers
                .heartbeat("w-1", &report, 11, |_| false)
                .unwrap()
                .persist
        );
        // Two idle, it says; control placed one there.
        assert_eq!(workers.lock()["w-1"].idle[&version_key("1")], 1);
        let drained = workers
            .heartbeat("w-1", &report, 12, |lease| lease == 1000)
            .unwrap();
        assert_eq!(drained.state, WorkerState::Draining);
        assert!(drained.persist);
        assert!(workers.heartbeat("w-2", &report, 7, |_| false).is_none());
    }

    #[test]
    fn heartbeats_are_believed_only_as_far_as_control_placed() {
        let workers = Workers::default();
        workers.add(&worker_row("w-1", 8, 1000));
        let boast = HeartbeatRequest {
            inventory: vec![
                InventoryEntry {
                    key: version_key("1"),
                    idle: 1000,
                    busy: 5,
                },
                InventoryEntry {
                    key: version_key("2"),
                    idle: 7,
                    busy: 0,
                },
            ],
            environments: 1_000_000,
            ..HeartbeatRequest::default()
        };
        // Nothing was sent there: nothing it claims to hold counts.
        workers.heartbeat("w-1", &boast, 0, |_| false).unwrap();
        let view = workers.lock()["w-1"].clone();
        assert!(view.idle.is_empty() && view.held.is_empty(), "{view:?}");
        assert_eq!(view.environments, 8, "at most its maximum");

        // One cold invocation of version 1 went there, and version 2 is provisioned (3).
        drop(workers.claim(&version_key("1"), 128, |_| Some("w-1".into())));
        workers.expect("w-1", &version_key("2"), 128, 3);
        workers.heartbeat("w-1", &boast, 0, |_| false).unwrap();
        let view = workers.lock()["w-1"].clone();
        assert_eq!(view.held[&version_key("1")], 1);
        assert_eq!(view.idle[&version_key("1")], 1);
        assert_eq!(view.held[&version_key("2")], 3);
        assert_eq!(view.idle[&version_key("2")], 3);
    }

    #[test]
    fn silent_workers_die_and_come_back_with_a_heartbeat() {
        let workers = Workers::default();
        workers.add(&worker_row("w-1", 8, 1000));
        assert!(workers.mark_silent_dead(Duration::from_secs(60)).is_empty());
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(workers.mark_silent_dead(Duration::ZERO), ["w-1"]);
        assert_eq!(workers.state("w-1"), Some(WorkerState::Dead));
        let heard = workers
            .heartbeat("w-1", &HeartbeatRequest::default(), 1, |_| false)
            .unwrap();
        assert_eq!(heard.state, WorkerState::Active);
        assert!(workers.set_state("w-1", WorkerState::Gone));
        assert!(workers
            .heartbeat("w-1", &HeartbeatRequest::default(), 2, |_| false)
            .is_none());
    }

    #[test]
    fn heartbeats_replace_provisioning_failures_with_bounded_reasons() {
        let workers = Workers::default();
        workers.add(&worker_row("w-1", 8, 1000));
        workers.expect("w-1", &version_key("1"), 128, 1);
        let failing = |reason: String| HeartbeatRequest {
            provision_failures: vec![ProvisionFailure {
                key: version_key("1"),
                reason,
            }],
            ..HeartbeatRequest::default()
        };
        workers
            .heartbeat("w-1", &failing("init error: unreachable".into()), 0, |_| {
                false
            })
            .unwrap();
        assert_eq!(
            workers.lock()["w-1"].provision_failures[&version_key("1")],
            "init error: unreachable"
        );
        // A guest's message cannot grow control's memory or the API's answers.
        let long = format!("x{}", "é".repeat(MAX_FAILURE_REASON));
        workers
            .heartbeat("w-1", &failing(long.clone()), 0, |_| false)
            .unwrap();
        let kept = workers.lock()["w-1"].provision_failures[&version_key("1")].clone();
        assert_eq!(
            kept.len(),
            MAX_FAILURE_REASON - 1,
            "cut before a split character"
        );
        assert!(long.starts_with(&kept));
        // The failure cleared: the next heartbeat leaves it out.
        workers
            .heartbeat("w-1", &HeartbeatRequest::default(), 0, |_| false)
            .unwrap();
        assert!(workers.lock()["w-1"].provision_failures.is_empty());
    }
}
