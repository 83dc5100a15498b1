//! Admission of new environments: the pool stays within its environment count and guest
//! memory, shutting down idle environments of other versions to make room when it can.

use std::collections::HashMap;

use super::instance::Instance;
use super::{Shared, State};
use crate::function::{EnvKey, Failure, FunctionSpec};

impl Shared {
    /// Makes room for one more environment of `spec`: returns the idle environments taken
    /// out of the pool to make it (the caller shuts them down outside the lock), or
    /// [`Failure::AtCapacity`] when even shutting down every idle environment that may go
    /// would not make enough, in which case none is taken.
    pub(super) fn admit(
        &self,
        st: &mut State,
        spec: &FunctionSpec,
    ) -> Result<Vec<Instance>, Failure> {
        let max_environments = self.config.max_environments;
        let budget = self.config.memory_mib;
        let wanted = u64::from(spec.memory_mib);
        if wanted > budget {
            return Err(Failure::AtCapacity(format!(
                "the function needs {wanted} MiB and this worker has {budget} MiB for all its environments"
            )));
        }
        let (mut environments, mut memory) = in_use(st);
        let fits = |environments: usize, memory: u64| {
            environments < max_environments && memory.saturating_add(wanted) <= budget
        };
        if fits(environments, memory) {
            return Ok(Vec::new());
        }
        let mut chosen: HashMap<EnvKey, usize> = HashMap::new();
        for (key, memory_mib) in evictable(st) {
            if fits(environments, memory) {
                break;
            }
            *chosen.entry(key).or_default() += 1;
            environments -= 1;
            memory -= u64::from(memory_mib);
        }
        if !fits(environments, memory) {
            let (environments, memory) = in_use(st);
            return Err(Failure::AtCapacity(format!(
                "{environments} of {max_environments} environments and {memory} of {budget} MiB \
                 of guest memory in use, and no idle environment may be shut down to make room \
                 for {wanted} MiB"
            )));
        }
        let mut evicted = Vec::new();
        for (key, n) in chosen {
            if let Some(idle) = st.idle.get_mut(&key) {
                // `evictable` sorted each list least recently used first.
                evicted.extend(idle.drain(..n));
            }
        }
        st.idle.retain(|_, envs| !envs.is_empty());
        Ok(evicted)
    }
}

/// Environments alive (idle, busy or being created) and their guest memory (MiB).
fn in_use(st: &State) -> (usize, u64) {
    let idle = st.idle.values().flatten();
    let busy = st.busy.values();
    let environments =
        st.idle.values().map(Vec::len).sum::<usize>() + busy.clone().map(|(n, _)| n).sum::<usize>();
    let memory = idle
        .map(|env| u64::from(env.spec().memory_mib))
        .sum::<u64>()
        + busy
            .map(|(n, memory)| *n as u64 * u64::from(*memory))
            .sum::<u64>();
    (environments, memory)
}

/// The idle environments that may be shut down for room, least recently used first, as
/// (version, memory MiB): every idle one beyond what keeps its version at its provisioned
/// count. Sorts each version's idle list least recently used first, as [`Shared::admit`]
/// relies on.
fn evictable(st: &mut State) -> Vec<(EnvKey, u32)> {
    let mut candidates = Vec::new();
    let State {
        idle,
        busy,
        provisioned,
        ..
    } = st;
    for (key, envs) in idle.iter_mut() {
        envs.sort_by_key(|env| env.last_used);
        let live = envs.len() + busy.get(key).map_or(0, |(n, _)| *n);
        let kept = provisioned.get(key).map_or(0, |(_, n)| *n);
        let spare = live.saturating_sub(kept).min(envs.len());
        for env in &envs[..spare] {
            candidates.push((env.last_used, key.clone(), env.spec().memory_mib));
        }
    }
    candidates.sort_by_key(|(last_used, _, _)| *last_used);
    candidates
        .into_iter()
        .map(|(_, key, memory)| (key, memory))
        .collect()
}
