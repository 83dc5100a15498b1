//! One execution environment: a micro-VM with one function version loaded and initialised.
//! It runs one invocation at a time; the host enforces the timeout by stopping the vCPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use ember_wire::frame::Kind;
use ember_wire::function::{InvokeRequest, LoadRequest, ModuleKind, Outcome, Status};

use super::{Failure, FunctionSpec, LogSink};
use crate::client::{ClientError, GuestClient};
use crate::vm::{Vm, VmConfig};

/// Lambda's limit for the init phase.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

pub struct Environment {
    pub id: u64,
    vm: Vm,
    client: GuestClient,
    spec: Arc<FunctionSpec>,
    pub created: Instant,
    pub last_used: Instant,
    pub init_duration: Duration,
    pub invocations: u64,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

impl Environment {
    /// Boots a VM, loads the module and runs its init phase.
    pub fn create(spec: Arc<FunctionSpec>, log: &LogSink) -> Result<Environment, Failure> {
        let crashed = |e: &dyn std::fmt::Display| Failure::Crashed(e.to_string());
        let start = Instant::now();
        let vm = Vm::boot(&VmConfig {
            mem_mib: spec.memory_mib,
            ..VmConfig::default()
        })
        .map_err(|e| crashed(&e))?;
        let client = GuestClient::connect(&vm, CONNECT_TIMEOUT).map_err(|e| crashed(&e))?;
        let mut env = Environment {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            vm,
            client,
            spec: spec.clone(),
            created: Instant::now(),
            last_used: Instant::now(),
            init_duration: Duration::ZERO,
            invocations: 0,
        };
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| crashed(&e))?;
        let request = LoadRequest {
            handler: spec.handler.clone(),
            env: spec.env.clone(),
            seed,
            now_unix_ns: unix_ns(),
            memory_limit: u64::from(spec.memory_mib) << 20,
            module: spec.module.to_vec(),
        };
        let outcome = env.exchange(
            Kind::Load,
            &request.encode(),
            Kind::LoadReply,
            INIT_TIMEOUT,
            log,
        )?;
        env.init_duration = start.elapsed();
        match outcome.status {
            Status::Success => Ok(env),
            Status::InvalidModule => Err(Failure::InvalidModule(outcome.error)),
            Status::OutOfMemory => Err(Failure::OutOfMemory(outcome.error)),
            _ => Err(Failure::Init(outcome.error)),
        }
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
        let request = InvokeRequest {
            now_unix_ns: unix_ns(),
            env: extra_env.to_vec(),
            payload: payload.to_vec(),
        };
        self.invocations += 1;
        let outcome = self.exchange(
            Kind::Invoke,
            &request.encode(),
            Kind::InvokeReply,
            self.spec.timeout,
            log,
        );
        self.last_used = Instant::now();
        outcome
    }

    /// Sends one request and reads log frames until its reply, within `timeout`.
    fn exchange(
        &mut self,
        kind: Kind,
        payload: &[u8],
        reply: Kind,
        timeout: Duration,
        log: &LogSink,
    ) -> Result<Outcome, Failure> {
        let deadline = Instant::now() + timeout;
        self.client
            .send(kind as u8, payload)
            .map_err(|e| self.lost(e))?;
        loop {
            let remaining = deadline.saturating_duration_since(Instant::now());
            if remaining.is_zero() {
                return Err(self.timed_out(timeout));
            }
            self.client.stream_mut().set_read_timeout(Some(remaining));
            let frame = match self.client.receive() {
                Ok(frame) => frame,
                Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
                    return Err(self.timed_out(timeout))
                }
                Err(e) => return Err(self.lost(e)),
            };
            match Kind::from_u8(frame.kind) {
                Some(Kind::Log) => log(&self.spec, &frame.payload),
                Some(k) if k == reply => {
                    return Outcome::decode(&frame.payload)
                        .map_err(|e| Failure::Crashed(format!("guest sent a bad reply: {e}")));
                }
                _ => {
                    return Err(Failure::Crashed(format!(
                        "unexpected frame kind {}",
                        frame.kind
                    )))
                }
            }
        }
    }

    fn timed_out(&self, timeout: Duration) -> Failure {
        self.vm.stop();
        Failure::Timeout(timeout)
    }

    /// The conversation broke: report how the VM ended if it did.
    fn lost(&self, e: ClientError) -> Failure {
        let exit = self.vm.wait(Duration::from_millis(100));
        Failure::Crashed(match exit {
            Some(exit) => exit.to_string(),
            None => e.to_string(),
        })
    }

    pub fn kind(&self) -> ModuleKind {
        self.spec.kind
    }
}
