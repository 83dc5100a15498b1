//! Provisioned concurrency on the worker: every heartbeat answer lists each version this
//! worker should keep initialized environments of and how many; versions left out are
//! released. Creating environments takes a while (code fetch, init phase), so each change
//! runs in its own task, off the heartbeat loop, and a version never has two changes under
//! way at once: the next heartbeat after one ends brings the list it is compared with
//! again. A failed change is retried after [`RETRY_AFTER`]; until it succeeds, or control
//! stops asking for the version, the heartbeat reports why ([`Provisioning::failures`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ember_fleet::messages::{ProvisionFailure, Provisioned, VersionKey};

use crate::invoke::VersionError;
use crate::Worker;

/// How long a version whose change failed is left alone.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What the pool was told about one version.
struct Kept {
    /// The count it was last set to (or, after a failure, the count tried).
    count: u32,
    failed: Option<Failed>,
}

/// Why the last change of a version failed, as the heartbeat reports it.
struct Failed {
    reason: String,
    /// Not tried again before then (unless to release it).
    retry_at: Instant,
}

impl Kept {
    /// Whether the pool should be set to `count` at `now`.
    fn due(kept: Option<&Kept>, count: u32, now: Instant) -> bool {
        match kept {
            // A release is cheap and ends the failure: never held back.
            Some(Kept {
                failed: Some(failed),
                ..
            }) => count == 0 || failed.retry_at <= now,
            Some(kept) => kept.count != count,
            None => count > 0,
        }
    }
}

#[derive(Default)]
struct State {
    /// Versions the pool may keep environments of.
    kept: HashMap<VersionKey, Kept>,
    /// Versions with a change under way.
    running: HashSet<VersionKey>,
}

/// Applies control's lists of provisioned versions.
#[derive(Clone, Default)]
pub struct Provisioning {
    state: Arc<Mutex<State>>,
}

impl Provisioning {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts whatever it takes for the pool to keep exactly `wanted` (one heartbeat's
    /// list), without waiting for it.
    pub fn apply(&self, worker: &Arc<Worker>, wanted: Vec<Provisioned>) {
        let mut wanted: HashMap<VersionKey, Option<Provisioned>> = wanted
            .into_iter()
            .filter(|p| p.count > 0)
            .map(|p| (p.function.key.clone(), Some(p)))
            .collect();
        let mut state = self.lock();
        for key in state.kept.keys() {
            wanted.entry(key.clone()).or_insert(None);
        }
        let now = Instant::now();
        let mut started = Vec::new();
        for (key, change) in wanted {
            let count = change.as_ref().map_or(0, |p| p.count);
            if Kept::due(state.kept.get(&key), count, now) && state.running.insert(key.clone()) {
                started.push((key, change));
            }
        }
        drop(state);
        for (key, change) in started {
            let (this, worker) = (self.clone(), worker.clone());
            tokio::spawn(async move {
                let (count, result) = match &change {
                    Some(p) => (
                        p.count,
                        worker.functions.provision(&p.function, p.count).await,
                    ),
                    None => (0, worker.functions.release(&key).await),
                };
                this.done(key, count, result);
            });
        }
    }

    /// Records how a change of `key` to `count` ended.
    fn done(&self, key: VersionKey, count: u32, result: Result<(), VersionError>) {
        let mut state = self.lock();
        state.running.remove(&key);
        let failed = match result {
            Ok(()) if count == 0 => {
                state.kept.remove(&key);
                return;
            }
            Ok(()) => None,
            Err(e) => {
                log::warn!(
                    "keeping {count} environments of {}:{} ready: {e}",
                    key.function,
                    key.version
                );
                Some(Failed {
                    reason: e.to_string(),
                    retry_at: Instant::now() + RETRY_AFTER,
                })
            }
        };
        state.kept.insert(key, Kept { count, failed });
    }

    /// The versions still asked for whose environments could not be created, and why.
    pub fn failures(&self) -> Vec<ProvisionFailure> {
        self.lock()
            .kept
            .iter()
            .filter(|(_, kept)| kept.count > 0)
            .filter_map(|(key, kept)| {
                Some(ProvisionFailure {
                    key: key.clone(),
                    reason: kept.failed.as_ref()?.reason.clone(),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_vmm::function::Failure;

    /// The failure of an init phase that trapped.
    fn init_trap() -> Result<(), VersionError> {
        Err(Failure::Init("unreachable".into()).into())
    }

    fn key() -> VersionKey {
        VersionKey {
            account: "a".into(),
            function: "f".into(),
            version: "1".into(),
            config_digest: "d".into(),
        }
    }

    #[test]
    fn a_failure_is_reported_until_it_succeeds_or_is_released() {
        let provisioning = Provisioning::default();
        provisioning.done(key(), 2, init_trap());
        assert_eq!(
            provisioning.failures(),
            [ProvisionFailure {
                key: key(),
                reason: "init error: unreachable".into(),
            }]
        );
        provisioning.done(key(), 2, Ok(()));
        assert!(provisioning.failures().is_empty(), "it succeeded");

        provisioning.done(key(), 2, init_trap());
        // A failed release is no provisioning failure: the version is no longer asked for.
        provisioning.done(key(), 0, init_trap());
        assert!(provisioning.failures().is_empty());
        provisioning.done(key(), 0, Ok(()));
        assert!(provisioning.lock().kept.is_empty());
    }

    #[test]
    fn a_failed_version_waits_to_retry_but_not_to_be_released() {
        let now = Instant::now();
        let failed = Kept {
            count: 2,
            failed: Some(Failed {
                reason: "init error".into(),
                retry_at: now + RETRY_AFTER,
            }),
        };
        assert!(!Kept::due(Some(&failed), 2, now));
        assert!(!Kept::due(Some(&failed), 3, now), "a new count waits too");
        assert!(Kept::due(Some(&failed), 0, now), "released at once");
        assert!(Kept::due(Some(&failed), 2, now + RETRY_AFTER));

        let kept = Kept {
            count: 2,
            failed: None,
        };
        assert!(!Kept::due(Some(&kept), 2, now));
        assert!(Kept::due(Some(&kept), 1, now));
        assert!(Kept::due(None, 1, now));
        assert!(!Kept::due(None, 0, now));
    }
}
