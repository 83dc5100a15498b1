//! One execution environment: a micro-VM with one function version loaded and initialised.
//! It runs one invocation at a time; the host enforces the timeout by stopping the vCPU:
//! the deadline is fixed when the environment takes the invocation, before the request is
//! written, and the process's [`watchdog`] stops the VM at that deadline whatever the host
//! thread is doing (writing a request the guest does not read, or waiting for a reply).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_wire::frame::Kind;
use ember_wire::function::{InvokeRequest, LoadRequest, Outcome, Status};

use super::{EnvError, Failure, FunctionSpec, Isolation, LogBuffer, LogSink};
use crate::client::{ClientError, GuestClient};
use crate::vm::watchdog;
use crate::vm::{Command, Pause, Snapshot, SpareVm, Vm, VmConfig};

/// Lambda's limit for the init phase.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an idle guest may take to park for a checkpoint or reset.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(2);

pub struct Environment {
    vm: Vm,
    /// The frame connection; closed while the VM is paused for a reset.
    client: Option<GuestClient>,
    spec: Arc<FunctionSpec>,
    /// The function version right after its init phase: where this environment started,
    /// and where a per-invocation reset returns to.
    snapshot: Arc<Snapshot>,
    /// Started in a spare VM (see [`SpareVm`]).
    pub spare: bool,
    /// Started in a spare VM and not yet trimmed: after the first invocation (and its
    /// reset, with per-invocation isolation), the warmed pages left unused are given back.
    trim_pending: bool,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn seed() -> Result<[u8; 32], Failure> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(EnvError::Seed)?;
    Ok(seed)
}

impl Environment {
    /// Runs the init phase of `spec` once, in a VM started from `template` (a ready
    /// guest-init of the right memory size), and snapshots the result: every environment of
    /// the version then starts from that snapshot instead of loading and initialising again.
    pub fn prepare(
        spec: &Arc<FunctionSpec>,
        template: &Arc<Snapshot>,
        log: &LogSink,
    ) -> Result<Arc<Snapshot>, Failure> {
        Self::prepare_logged(spec, template, log, &mut LogBuffer::default())
    }

    /// Like [`Environment::prepare`], also keeping the init phase's log in `buffer` (for the
    /// invocation that waited for it).
    pub fn prepare_logged(
        spec: &Arc<FunctionSpec>,
        template: &Arc<Snapshot>,
        log: &LogSink,
        buffer: &mut LogBuffer,
    ) -> Result<Arc<Snapshot>, Failure> {
        let mut env = Environment::start(spec.clone(), template.clone(), true)?;
        let deadline = Instant::now() + INIT_TIMEOUT;
        let request = LoadRequest {
            handler: spec.handler.clone(),
            env: spec.env.clone(),
            seed: seed()?,
            now_unix_ns: unix_ns(),
            memory_limit: u64::from(spec.memory_mib) << 20,
            module: spec.module.to_vec(),
        };
        let outcome = env.exchange(
            Kind::Load,
            &request.encode(),
            Kind::LoadReply,
            (deadline, INIT_TIMEOUT),
            log,
            buffer,
        )?;
        match outcome.status {
            Status::Success => {}
            Status::InvalidModule => return Err(Failure::InvalidModule(outcome.error)),
            Status::OutOfMemory => return Err(Failure::OutOfMemory(outcome.error)),
            _ => {
                let tail = String::from_utf8_lossy(&outcome.log_tail);
                return Err(Failure::Init(if tail.is_empty() {
                    outcome.error
                } else {
                    format!("{}\n{tail}", outcome.error)
                }));
            }
        }
        env.client = None;
        let paused = env
            .vm
            .pause(Pause::Idle, PAUSE_TIMEOUT)
            .map_err(EnvError::Snapshot)?;
        Ok(Snapshot::of_paused(&env.vm, template, paused).map_err(EnvError::Snapshot)?)
    }

    /// A new environment of a prepared function version, in a new VM restored from its
    /// snapshot.
    pub fn start(
        spec: Arc<FunctionSpec>,
        snapshot: Arc<Snapshot>,
        track_dirty: bool,
    ) -> Result<Environment, Failure> {
        let isolated = spec.isolation == Isolation::PerInvocation;
        let vm = Vm::restore(
            &snapshot,
            &VmConfig {
                track_dirty: track_dirty || isolated,
                ..VmConfig::default()
            },
        )
        .map_err(EnvError::Restore)?;
        Self::with_vm(spec, snapshot, vm, false)
    }

    /// A new environment of a prepared function version, in a spare VM of the template
    /// its snapshot was taken from (see [`SpareVm`]).
    pub fn from_spare(
        spec: Arc<FunctionSpec>,
        snapshot: Arc<Snapshot>,
        spare: SpareVm,
    ) -> Result<Environment, Failure> {
        let isolated = spec.isolation == Isolation::PerInvocation;
        let vm = spare
            .into_vm(&snapshot, isolated)
            .map_err(EnvError::Spare)?;
        Self::with_vm(spec, snapshot, vm, true)
    }

    fn with_vm(
        spec: Arc<FunctionSpec>,
        snapshot: Arc<Snapshot>,
        vm: Vm,
        spare: bool,
    ) -> Result<Environment, Failure> {
        // The handshake overlaps the first request.
        let client = Some(GuestClient::open(&vm).map_err(EnvError::Connect)?);
        Ok(Environment {
            vm,
            client,
            spec,
            snapshot,
            spare,
            trim_pending: spare,
        })
    }

    pub fn spec(&self) -> &Arc<FunctionSpec> {
        &self.spec
    }

    /// Runs one invocation. `Err` means the environment is gone (timeout, crash) and must
    /// be discarded; a function error comes back as an `Ok` outcome.
    pub fn invoke(
        &mut self,
        payload: &[u8],
        extra_env: &[(String, String)],
        log: &LogSink,
    ) -> Result<Outcome, Failure> {
        self.invoke_logged(payload, extra_env, log, &mut LogBuffer::default())
    }

    /// Like [`Environment::invoke`], also keeping the invocation's log in `buffer`.
    pub fn invoke_logged(
        &mut self,
        payload: &[u8],
        extra_env: &[(String, String)],
        log: &LogSink,
        buffer: &mut LogBuffer,
    ) -> Result<Outcome, Failure> {
        let deadline = Instant::now() + self.spec.timeout;
        let request = InvokeRequest {
            now_unix_ns: unix_ns(),
            seed: seed()?,
            env: extra_env.to_vec(),
            payload: payload.to_vec(),
        };
        let outcome = self.exchange(
            Kind::Invoke,
            &request.encode(),
            Kind::InvokeReply,
            (deadline, self.spec.timeout),
            log,
            buffer,
        );
        if self.spec.isolation == Isolation::Reuse {
            self.trim_once();
        }
        outcome
    }

    /// Asks for the trim of a spare's unused pages, once. It runs once the guest has been
    /// idle a while, so it holds up neither this reply, nor a reset, nor the next requests
    /// of a burst.
    fn trim_once(&mut self) {
        if std::mem::take(&mut self.trim_pending) {
            self.vm.trim();
        }
    }

    /// Returns memory, vCPU and device to the state right after init (per-invocation
    /// isolation): only the pages written since are touched.
    pub fn reset(&mut self) -> Result<(), Failure> {
        // The reset drops every connection with the guest's memory: no need to close first,
        // and the new one's handshake can overlap the next request.
        self.client = None;
        self.vm
            .pause(Pause::Now, PAUSE_TIMEOUT)
            .map_err(EnvError::Reset)?;
        let result = self.vm.command(Command::Reset(self.snapshot.clone()));
        self.vm.resume();
        result.map_err(EnvError::Reset)?;
        self.client = Some(GuestClient::open(&self.vm).map_err(EnvError::Reconnect)?);
        self.trim_once();
        Ok(())
    }

    /// Sends one request and reads log frames until its reply, by `deadline` (`timeout`
    /// after the request was taken). The watchdog stops the VM at the deadline if this
    /// thread is still blocked then.
    fn exchange(
        &mut self,
        kind: Kind,
        payload: &[u8],
        reply: Kind,
        (deadline, timeout): (Instant, Duration),
        log: &LogSink,
        buffer: &mut LogBuffer,
    ) -> Result<Outcome, Failure> {
        let watch = watchdog::arm(deadline, self.vm.stopper());
        let Some(client) = self.client.as_mut() else {
            return Err(EnvError::NotConnected.into());
        };
        client.stream_mut().set_write_deadline(Some(deadline));
        if let Err(e) = client.send(kind as u8, payload) {
            return Err(self.failed(e, deadline, timeout, &watch));
        }
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timed_out(timeout));
            }
            let client = self.client.as_mut().expect("checked above");
            client.stream_mut().set_read_timeout(Some(remaining));
            let frame = match client.receive() {
                Ok(frame) => frame,
                Err(e) => return Err(self.failed(e, deadline, timeout, &watch)),
            };
            match Kind::from_u8(frame.kind) {
                Some(Kind::Log) => {
                    log(&self.spec, &frame.payload);
                    buffer.push(&frame.payload);
                }
                Some(k) if k == reply => {
                    // A reply that raced the watchdog is too late: the VM is going.
                    if watch.disarm() {
                        return Err(self.timed_out(timeout));
                    }
                    return Ok(Outcome::decode(&frame.payload).map_err(EnvError::BadReply)?);
                }
                _ => return Err(EnvError::UnexpectedFrame(frame.kind).into()),
            }
        }
    }

    /// The conversation failed with `e`: a timeout if the deadline has passed (the
    /// watchdog may have stopped the VM, failing the stream), else how the VM ended.
    fn failed(
        &self,
        e: ClientError,
        deadline: Instant,
        timeout: Duration,
        watch: &watchdog::Armed,
    ) -> Failure {
        let timed_out =
            matches!(&e, ClientError::Io(e) if e.kind() == std::io::ErrorKind::TimedOut);
        if timed_out || watch.fired() || Instant::now() >= deadline {
            return self.timed_out(timeout);
        }
        self.lost(e)
    }

    fn timed_out(&self, timeout: Duration) -> Failure {
        self.vm.stop();
        Failure::Timeout(timeout)
    }

    /// The conversation broke: report how the VM ended if it did.
    fn lost(&self, e: ClientError) -> Failure {
        match self.vm.wait(Duration::from_millis(100)) {
            Some(exit) => EnvError::VmEnded(exit),
            None => EnvError::Lost(e),
        }
        .into()
    }
}
