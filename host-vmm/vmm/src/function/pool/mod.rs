//! The environment pool: hands out an idle environment of the right function version or
//! creates one, runs one invocation at a time on it, reaps idle environments, retires old
//! ones, keeps provisioned ones ready and keeps spare VMs warm for new environments.
//!
//! It holds no more environments than [`PoolConfig::max_environments`], whose guest memory
//! together stays within [`PoolConfig::memory_mib`]: a new environment that does not fit
//! shuts down idle ones of other versions (least recently used first, never below a
//! version's provisioned count) or, when that cannot make room, is refused with
//! [`Failure::AtCapacity`] before anything runs.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use ember_wire::function::{ModuleKind, Status, PAYLOAD_MAX};

mod admission;
mod instance;
mod upkeep;

use super::{
    EnvError, EnvKey, Environment, Failure, FunctionSpec, Invocation, Isolation, LogBuffer, LogSink,
};
use crate::process::Jail;
use crate::vm::{Snapshot, SpareVm, VmConfig};
use instance::{Instance, Spare};
use upkeep::reap_loop;

#[derive(Clone, Debug)]
pub struct PoolConfig {
    /// An environment idle this long is shut down (unless provisioned).
    pub idle_timeout: Duration,
    /// An environment this old is retired after its current invocation.
    pub max_age: Duration,
    /// How often the reaper runs.
    pub reap_interval: Duration,
    /// Spare VMs kept warm per memory size in use (0: none). A new environment of any
    /// version of that size then starts in a spare instead of a new VM, skipping VM
    /// creation and most first-touch page faults; each spare holds about
    /// `spare_warm_heap` + 1.5 MiB of host memory while it waits.
    pub spare_vms: usize,
    /// How much of a spare's guest heap is faulted in ahead of need (the guest image and
    /// stack always are). An environment started in a spare gives back the part its first
    /// invocation left untouched once it is idle.
    pub spare_warm_heap: u64,
    /// Test only: boot guests with the test-frame flag, so a function whose environment
    /// sets `EMBER_TEST_HOSTILE` plays a hostile guest (see `ember_wire::hostile`).
    pub test_frames: bool,
    /// Most environments alive at once (idle, busy or being created), all versions.
    pub max_environments: usize,
    /// Most guest memory (MiB) all environments together may have. Spare VMs, which hold
    /// a few MiB each until used, are not counted.
    pub memory_mib: u64,
    /// Run every VM (templates, init phases, spares, environments) in a sandboxed process
    /// of its own (see `docs/isolation.md`); `None`: in this process.
    pub jail: Option<Arc<Jail>>,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            idle_timeout: Duration::from_secs(300),
            max_age: Duration::from_secs(2 * 3600),
            reap_interval: Duration::from_secs(1),
            spare_vms: 2,
            spare_warm_heap: 4 << 20,
            test_frames: false,
            max_environments: usize::MAX,
            memory_mib: u64::MAX,
            jail: None,
        }
    }
}

/// Counts for one function version.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PoolStats {
    pub idle: usize,
    pub busy: usize,
}

#[derive(Default)]
struct State {
    idle: HashMap<EnvKey, Vec<Instance>>,
    /// Environments running an invocation or being created, per version, with the
    /// version's memory size (MiB).
    busy: HashMap<EnvKey, (usize, u32)>,
    provisioned: HashMap<EnvKey, (Arc<FunctionSpec>, usize)>,
    stopping: bool,
}

impl State {
    fn live(&self, key: &EnvKey) -> usize {
        self.idle.get(key).map_or(0, Vec::len) + self.busy_count(key)
    }

    fn busy_count(&self, key: &EnvKey) -> usize {
        self.busy.get(key).map_or(0, |(n, _)| *n)
    }

    fn set_busy(&mut self, spec: &FunctionSpec, delta: isize) {
        let (n, memory) = self
            .busy
            .entry(spec.key().clone())
            .or_insert((0, spec.memory_mib));
        *n = n.saturating_add_signed(delta);
        *memory = spec.memory_mib;
    }
}

type PreparedSlot = Arc<Mutex<(Option<Arc<Snapshot>>, Instant)>>;

struct Shared {
    config: PoolConfig,
    state: Mutex<State>,
    wake_reaper: Condvar,
    log: LogSink,
    /// A ready guest-init per memory size, that versions are prepared from.
    templates: Mutex<HashMap<u32, Arc<Snapshot>>>,
    /// Each version's memory size (MiB) and its post-init snapshot, that its environments
    /// start from, with when it was last used.
    prepared: Mutex<HashMap<EnvKey, (u32, PreparedSlot)>>,
    /// Spare VMs per memory size (MiB): warmed, bound to no version, each handed out once.
    spares: Mutex<HashMap<u32, Vec<Spare>>>,
    /// Held while creating provisioned environments, so the caller of `set_provisioned`
    /// and the reaper never both create the same missing one.
    replenishing: Mutex<()>,
}

pub struct Pool {
    shared: Arc<Shared>,
    reaper: Option<JoinHandle<()>>,
}

impl Pool {
    pub fn new(config: PoolConfig, log: LogSink) -> Pool {
        let shared = Arc::new(Shared {
            config,
            state: Mutex::default(),
            wake_reaper: Condvar::new(),
            log,
            templates: Mutex::default(),
            prepared: Mutex::default(),
            spares: Mutex::default(),
            replenishing: Mutex::default(),
        });
        let reaper = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("env-reaper".into())
                .spawn(move || reap_loop(&shared))
                .expect("spawning the environment reaper")
        };
        Pool {
            shared,
            reaper: Some(reaper),
        }
    }

    /// Runs one invocation on an idle environment of `spec`, or on a new one.
    pub fn invoke(&self, spec: &Arc<FunctionSpec>, payload: &[u8]) -> Invocation {
        self.invoke_with_env(spec, payload, &[])
    }

    /// Like [`Pool::invoke`], adding `extra_env` to the function's environment for this
    /// invocation only (values that change between invocations, such as role credentials,
    /// without changing which environments the version may use).
    pub fn invoke_with_env(
        &self,
        spec: &Arc<FunctionSpec>,
        payload: &[u8],
        extra_env: &[(String, String)],
    ) -> Invocation {
        let start = Instant::now();
        let mut log = LogBuffer::default();
        let failed = |error: Failure, cold: bool, log: LogBuffer| Invocation {
            output: Vec::new(),
            error: Some(error),
            log_tail: Vec::new(),
            log: log.into_bytes(),
            cold,
            spare: false,
            init_duration: None,
            duration: start.elapsed(),
            memory_used: 0,
            environment: 0,
        };
        if payload.len() > PAYLOAD_MAX {
            return failed(Failure::PayloadTooLarge(payload.len()), false, log);
        }
        let key = spec.key().clone();
        let (idle, shut_down) = {
            let mut st = self.shared.lock();
            let max_age = self.shared.config.max_age;
            let mut shut_down = Vec::new();
            let mut idle = None;
            while let Some(env) = st.idle.get_mut(&key).and_then(Vec::pop) {
                if env.created.elapsed() < max_age {
                    idle = Some(env);
                    break;
                }
                shut_down.push(env);
            }
            if idle.is_none() {
                match self.shared.admit(&mut st, spec) {
                    Ok(evicted) => shut_down.extend(evicted),
                    Err(refused) => {
                        drop(st);
                        drop(shut_down);
                        return failed(refused, false, log);
                    }
                }
            }
            st.set_busy(spec, 1);
            (idle, shut_down)
        };
        drop(shut_down);
        let (mut env, init_duration) = match idle {
            Some(env) => (env, None),
            None => match self.shared.create(spec, &mut log) {
                Ok((env, took)) => (env, Some(took)),
                Err(e) => {
                    self.shared.lock().set_busy(spec, -1);
                    self.shared.wake_reaper.notify_all();
                    return failed(e, true, log);
                }
            },
        };
        let invoke_start = Instant::now();
        let result = env.invoke_logged(payload, extra_env, &self.shared.log, &mut log);
        let duration = invoke_start.elapsed();
        let mut invocation = Invocation {
            output: Vec::new(),
            error: None,
            log_tail: Vec::new(),
            log: log.into_bytes(),
            cold: init_duration.is_some(),
            spare: init_duration.is_some() && env.spare,
            init_duration,
            duration,
            memory_used: 0,
            environment: env.id,
        };
        let keep = match result {
            Ok(outcome) => {
                invocation.memory_used = outcome.memory_used;
                invocation.log_tail = outcome.log_tail;
                invocation.output = outcome.output;
                invocation.error = match outcome.status {
                    Status::Success => None,
                    Status::OutOfMemory => Some(Failure::OutOfMemory(outcome.error)),
                    Status::InitError => Some(Failure::Init(outcome.error)),
                    Status::InvalidModule => Some(Failure::InvalidModule(outcome.error)),
                    Status::FunctionError => Some(Failure::Function(outcome.error)),
                };
                // A reactor that failed may have been cut off mid-update: its state is unknown.
                invocation.error.is_none() || spec.kind == ModuleKind::Command
            }
            Err(failure) => {
                invocation.error = Some(failure);
                false
            }
        };
        let keep = keep && (spec.isolation == Isolation::Reuse || env.reset().is_ok());
        self.release(env, keep);
        invocation
    }

    /// Returns an environment to the idle list, or shuts it down.
    fn release(&self, env: Instance, keep: bool) {
        let spec = env.spec().clone();
        let retire = env.created.elapsed() >= self.shared.config.max_age;
        let mut st = self.shared.lock();
        st.set_busy(&spec, -1);
        if keep && !retire && !st.stopping {
            st.idle.entry(spec.key().clone()).or_default().push(env);
        } else {
            drop(st);
            drop(env);
            self.shared.wake_reaper.notify_all();
        }
    }

    /// Keeps `count` initialised environments of `spec` at all times; creates the missing
    /// ones before returning. A lower count shuts down as many idle environments as it
    /// gives up at once (least recently used first), rather than at the idle timeout.
    pub fn set_provisioned(&self, spec: &Arc<FunctionSpec>, count: usize) -> Result<(), Failure> {
        let released: Vec<Instance> = {
            let mut st = self.shared.lock();
            let before = if count == 0 {
                st.provisioned.remove(spec.key())
            } else {
                st.provisioned
                    .insert(spec.key().clone(), (spec.clone(), count))
            }
            .map_or(0, |(_, n)| n);
            match st.idle.get_mut(spec.key()) {
                Some(idle) => {
                    let surplus = before.saturating_sub(count).min(idle.len());
                    idle.drain(..surplus).collect()
                }
                None => Vec::new(),
            }
        };
        drop(released);
        self.shared.replenish(Some(spec.key()))
    }

    pub fn stats(&self, key: &EnvKey) -> PoolStats {
        let st = self.shared.lock();
        PoolStats {
            idle: st.idle.get(key).map_or(0, Vec::len),
            busy: st.busy_count(key),
        }
    }

    /// Environments of every version, idle or busy.
    pub fn total(&self) -> usize {
        let totals = self.totals();
        totals.idle + totals.busy
    }

    /// Environments of every version, by state.
    pub fn totals(&self) -> PoolStats {
        let st = self.shared.lock();
        PoolStats {
            idle: st.idle.values().map(Vec::len).sum(),
            busy: st.busy.values().map(|(n, _)| n).sum(),
        }
    }

    /// Spare VMs ready for new environments of `memory_mib`.
    pub fn spares(&self, memory_mib: u32) -> usize {
        self.shared
            .spares
            .lock()
            .unwrap()
            .get(&memory_mib)
            .map_or(0, Vec::len)
    }

    /// Spare VMs ready, per memory size (MiB).
    pub fn spares_by_memory(&self) -> Vec<(u32, usize)> {
        let spares = self.shared.spares.lock().unwrap();
        spares.iter().map(|(mib, vms)| (*mib, vms.len())).collect()
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let idle = {
            let mut st = self.shared.lock();
            st.stopping = true;
            std::mem::take(&mut st.idle)
        };
        self.shared.wake_reaper.notify_all();
        if let Some(reaper) = self.reaper.take() {
            let _ = reaper.join();
        }
        drop(idle);
        drop(std::mem::take(&mut *self.shared.spares.lock().unwrap()));
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// A new environment for `spec` and how long preparing it took. The first one of a
    /// version runs the init phase and snapshots it (in a VM started from the template of
    /// its memory size); every one starts from that snapshot, in a spare VM if one is
    /// ready, else in a new VM. The init phase's log, if this ran it, goes into `log`.
    fn create(
        &self,
        spec: &Arc<FunctionSpec>,
        log: &mut LogBuffer,
    ) -> Result<(Instance, Duration), Failure> {
        let start = Instant::now();
        let prepared = self.prepared(spec, log)?;
        let spare = self.take_spare(spec.memory_mib);
        let env = match (&self.config.jail, spare) {
            (Some(jail), spare) => {
                let spare = match spare {
                    Some(Spare::Jailed(spare)) => Some(spare),
                    _ => None,
                };
                Instance::jailed(jail.start(spec, &prepared, spare)?, jail.clone())
            }
            (None, Some(Spare::Local(spare))) => Instance::local(
                Environment::from_spare(spec.clone(), prepared.clone(), spare).or_else(|e| {
                    log::warn!("a spare VM failed, starting a new one: {e}");
                    Environment::start(spec.clone(), prepared, false)
                })?,
            ),
            (None, _) => Instance::local(Environment::start(spec.clone(), prepared, false)?),
        };
        Ok((env, start.elapsed()))
    }

    /// Takes a spare VM of `memory_mib` (each is handed out once), and has the reaper warm
    /// a replacement.
    fn take_spare(&self, memory_mib: u32) -> Option<Spare> {
        let spare = self.spares.lock().unwrap().get_mut(&memory_mib)?.pop()?;
        self.wake_reaper.notify_all();
        Some(spare)
    }

    /// A spare VM warmed from `template`.
    fn warm_spare(&self, template: &Arc<Snapshot>) -> Result<Spare, Failure> {
        let warm = self.config.spare_warm_heap;
        Ok(match &self.config.jail {
            Some(jail) => Spare::Jailed(jail.spare(template, warm)?),
            None => Spare::Local(SpareVm::new(template, warm).map_err(EnvError::WarmSpare)?),
        })
    }

    /// The version's post-init snapshot, prepared once: concurrent first invocations of a
    /// version wait for one preparation; different versions prepare in parallel. A failed
    /// preparation is not remembered, so the next invocation tries again.
    fn prepared(
        &self,
        spec: &Arc<FunctionSpec>,
        log: &mut LogBuffer,
    ) -> Result<Arc<Snapshot>, Failure> {
        let slot = self
            .prepared
            .lock()
            .unwrap()
            .entry(spec.key().clone())
            .or_insert_with(|| {
                (
                    spec.memory_mib,
                    Arc::new(Mutex::new((None, Instant::now()))),
                )
            })
            .1
            .clone();
        let mut slot = slot.lock().unwrap();
        slot.1 = Instant::now();
        if let Some(snapshot) = &slot.0 {
            return Ok(snapshot.clone());
        }
        let template = self.template(spec.memory_mib)?;
        let snapshot = match &self.config.jail {
            Some(jail) => jail.prepare(spec, &template, &self.log, log)?,
            None => Environment::prepare_logged(spec, &template, &self.log, log)?,
        };
        slot.0 = Some(snapshot.clone());
        Ok(snapshot)
    }

    fn template(&self, mem_mib: u32) -> Result<Arc<Snapshot>, Failure> {
        let mut templates = self.templates.lock().unwrap();
        if let Some(t) = templates.get(&mem_mib) {
            return Ok(t.clone());
        }
        let config = VmConfig {
            mem_mib,
            test_frames: self.config.test_frames,
            ..VmConfig::default()
        };
        let t = match &self.config.jail {
            Some(jail) => jail.template(&config)?,
            None => Snapshot::of_fresh_guest(&config).map_err(EnvError::Template)?,
        };
        templates.insert(mem_mib, t.clone());
        Ok(t)
    }
}
