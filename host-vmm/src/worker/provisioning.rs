//! Provisioned concurrency on the worker: every heartbeat answer lists each version this
//! worker should keep initialized environments of and how many; versions left out are
//! released. Creating environments takes a while (code fetch, init phase), so each change
//! runs in its own task, off the heartbeat loop, and a version never has two changes under
//! way at once: the next heartbeat after one ends brings the list it is compared with
//! again. A failed change is retried after [`RETRY_AFTER`].

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use ember_fleet::messages::{Provisioned, VersionKey};

use super::Worker;

/// How long a version whose change failed is left alone.
const RETRY_AFTER: Duration = Duration::from_secs(10);

/// What the pool was told about one version.
struct Kept {
    /// The count it was last set to (or, after a failure, the count tried).
    count: u32,
    /// After a failure: not before then again.
    retry_at: Option<Instant>,
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
            let due = match state.kept.get(&key) {
                Some(kept) => match kept.retry_at {
                    Some(at) => at <= now,
                    None => kept.count != count,
                },
                None => count > 0,
            };
            if due && state.running.insert(key.clone()) {
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
    fn done(&self, key: VersionKey, count: u32, result: Result<(), String>) {
        let mut state = self.lock();
        state.running.remove(&key);
        let retry_at = match result {
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
                Some(Instant::now() + RETRY_AFTER)
            }
        };
        state.kept.insert(key, Kept { count, retry_at });
    }
}
