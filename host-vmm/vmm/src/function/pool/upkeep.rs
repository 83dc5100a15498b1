//! The pool's upkeep, on its own thread: reaps environments idle too long or too old,
//! keeps provisioned versions at their count and spare VMs warm.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::Shared;
use crate::function::{EnvKey, Failure, LogBuffer};

impl Shared {
    /// Shuts down environments idle too long or too old (provisioned ones are kept up to
    /// their count, but still retired when old).
    fn reap(&self) {
        let now = Instant::now();
        let mut doomed = Vec::new();
        {
            let mut st = self.lock();
            let provisioned: HashMap<EnvKey, usize> = st
                .provisioned
                .iter()
                .map(|(k, (_, n))| (k.clone(), *n))
                .collect();
            for (key, envs) in st.idle.iter_mut() {
                let mut keep_warm = provisioned.get(key).copied().unwrap_or(0);
                let mut kept = Vec::with_capacity(envs.len());
                for env in envs.drain(..) {
                    let old = now.duration_since(env.created) >= self.config.max_age;
                    let idle = now.duration_since(env.last_used) >= self.config.idle_timeout;
                    if old || (idle && keep_warm == 0) {
                        doomed.push(env);
                    } else {
                        keep_warm = keep_warm.saturating_sub(1);
                        kept.push(env);
                    }
                }
                *envs = kept;
            }
            st.idle.retain(|_, envs| !envs.is_empty());
            // A version with no environment left, not provisioned and unused for the idle
            // timeout gives its snapshot back.
            let idle_timeout = self.config.idle_timeout;
            self.prepared.lock().unwrap().retain(|key, (_, slot)| {
                let in_use = st.live(key) > 0 || st.provisioned.contains_key(key);
                in_use || slot.try_lock().is_ok_and(|s| s.1.elapsed() < idle_timeout)
            });
        }
        drop(doomed);
    }

    /// Warms spare VMs until every memory size that a prepared version uses has
    /// `spare_vms` of them, and drops the spares of sizes no version uses any more.
    fn replenish_spares(&self) -> Result<(), Failure> {
        loop {
            let in_use: Vec<u32> = {
                let prepared = self.prepared.lock().unwrap();
                let templates = self.templates.lock().unwrap();
                prepared
                    .values()
                    .map(|(mem, _)| *mem)
                    .filter(|mem| templates.contains_key(mem))
                    .collect()
            };
            let missing = {
                let mut spares = self.spares.lock().unwrap();
                spares.retain(|mem, _| in_use.contains(mem));
                in_use
                    .into_iter()
                    .find(|mem| spares.get(mem).map_or(0, Vec::len) < self.config.spare_vms)
            };
            let Some(mem) = missing.filter(|_| !self.lock().stopping) else {
                return Ok(());
            };
            let template = self.template(mem)?;
            let spare = self.warm_spare(&template)?;
            self.spares
                .lock()
                .unwrap()
                .entry(mem)
                .or_default()
                .push(spare);
        }
    }

    /// Creates environments until every provisioned version (or just `only`) has its
    /// count. A version whose environments cannot be created is left for the next call,
    /// so that it holds up no other; the first such failure is returned.
    pub(super) fn replenish(&self, only: Option<&EnvKey>) -> Result<(), Failure> {
        let _one_at_a_time = self.replenishing.lock().unwrap();
        let mut failed = HashSet::new();
        let mut first_failure = None;
        loop {
            let missing = {
                let st = self.lock();
                if st.stopping {
                    break;
                }
                st.provisioned
                    .values()
                    .filter(|(spec, _)| only.is_none_or(|key| key == spec.key()))
                    .filter(|(spec, _)| !failed.contains(spec.key()))
                    .find(|(spec, n)| st.live(spec.key()) < *n)
                    .map(|(spec, _)| spec.clone())
            };
            let Some(spec) = missing else {
                break;
            };
            let admitted = {
                let mut st = self.lock();
                self.admit(&mut st, &spec)
                    .inspect(|_| st.set_busy(&spec, 1))
            };
            // Provisioned environments' init logs reach only the pool's sink.
            let created = admitted.and_then(|evicted| {
                drop(evicted);
                let created = self.create(&spec, &mut LogBuffer::default());
                let mut st = self.lock();
                st.set_busy(&spec, -1);
                created.map(|(env, _)| {
                    st.idle.entry(spec.key().clone()).or_default().push(env);
                })
            });
            if let Err(e) = created {
                failed.insert(spec.key().clone());
                first_failure.get_or_insert(e);
            }
        }
        first_failure.map_or(Ok(()), Err)
    }
}

pub(super) fn reap_loop(shared: &Shared) {
    loop {
        {
            let st = shared.lock();
            if st.stopping {
                return;
            }
            let (st, _) = shared
                .wake_reaper
                .wait_timeout(st, shared.config.reap_interval)
                .unwrap();
            if st.stopping {
                return;
            }
        }
        shared.reap();
        if let Err(e) = shared.replenish(None) {
            log::warn!("keeping provisioned environments ready: {e}");
        }
        if let Err(e) = shared.replenish_spares() {
            log::warn!("keeping spare VMs ready: {e}");
        }
    }
}
