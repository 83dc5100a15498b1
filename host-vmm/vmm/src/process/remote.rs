//! The worker's side: VM processes doing the pool's jobs. The worker holds their snapshots
//! as memfds it never maps, and waits for each answer only until a deadline.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_jail::channel::ChannelError;
use ember_jail::{Limits, VmProcess, Zygote};
use ember_wire::function::Outcome;

use super::{Reply, Request};
use crate::function::{EnvError, Failure, FunctionSpec, LogBuffer, LogSink};
use crate::vm::{Snapshot, SnapshotState, VmConfig};

/// How long booting a template or warming a spare may take.
const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
/// Lambda's limit for the init phase, and the time to snapshot after it.
const PREPARE_TIMEOUT: Duration = Duration::from_secs(15);
/// Beyond an invocation's own deadline (which the VM process enforces by stopping its
/// vCPU), how long the worker waits before it kills the process.
const MARGIN: Duration = Duration::from_secs(2);
/// Memory a VM process may use beyond its guest memory: the VMM's own heap, stacks and
/// page tables, the device buffers (≤ 1 MiB queued per stream), the binary.
pub const PROCESS_OVERHEAD: u64 = 64 << 20;
/// Threads a VM process may have: its main thread, the vCPU, the watchdog, and room.
const PROCESS_PIDS: u64 = 16;

/// Runs the pool's VMs in sandboxed processes from `zygote`.
#[derive(Debug)]
pub struct Jail {
    zygote: Zygote,
    next: AtomicU64,
}

impl Jail {
    pub fn new(zygote: Zygote) -> Jail {
        Jail {
            zygote,
            next: AtomicU64::new(1),
        }
    }

    /// A new VM process for a VM of `mem_mib`, named after its `role`.
    fn process(&self, mem_mib: u32, role: &str) -> Result<VmProcess, Failure> {
        let name = format!(
            "{role}-{}-{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let limits = Limits {
            memory_bytes: (u64::from(mem_mib) << 20) + PROCESS_OVERHEAD,
            pids: PROCESS_PIDS,
            memory_mib: u64::from(mem_mib),
        };
        self.zygote
            .spawn(&name, &limits)
            .map_err(|e| EnvError::Remote(e.to_string()).into())
    }

    /// Boots guest-init as `config` says in a VM process and keeps its snapshot.
    pub fn template(&self, config: &VmConfig) -> Result<Arc<Snapshot>, Failure> {
        let process = self.process(config.mem_mib, "template")?;
        let request = Request::Template {
            mem_mib: config.mem_mib,
            test_frames: config.test_frames,
        };
        let deadline = Instant::now() + SETUP_TIMEOUT;
        let mut conversation = Conversation::new(&self.zygote, &process);
        conversation.send(&request, &[], &[])?;
        conversation.snapshot(deadline, None)
    }

    /// Runs `spec`'s init phase in a VM process started from `template` and keeps the
    /// snapshot taken after it; its log goes to `log` and `buffer`.
    pub fn prepare(
        &self,
        spec: &Arc<FunctionSpec>,
        template: &Arc<Snapshot>,
        log: &LogSink,
        buffer: &mut LogBuffer,
    ) -> Result<Arc<Snapshot>, Failure> {
        let process = self.process(spec.memory_mib, "prepare")?;
        let (state, files) = template.export();
        let request = Request::Prepare {
            spec: spec.state(),
            template: Box::new(state),
        };
        let deadline = Instant::now() + PREPARE_TIMEOUT;
        let mut conversation = Conversation::new(&self.zygote, &process);
        conversation.send(&request, &spec.module, &raw(&files))?;
        conversation.snapshot(deadline, Some((spec, log, buffer)))
    }

    /// A VM process with a spare VM warmed from `template`, waiting to become an
    /// environment of any version prepared from it.
    pub fn spare(&self, template: &Arc<Snapshot>, warm_heap: u64) -> Result<RemoteSpare, Failure> {
        let mem_mib = (template.mem_size() >> 20) as u32;
        let process = self.process(mem_mib, "spare")?;
        let (state, files) = template.export();
        let request = Request::Spare {
            template: Box::new(state),
            warm_heap,
        };
        let mut conversation = Conversation::new(&self.zygote, &process);
        conversation.send(&request, &[], &raw(&files))?;
        match conversation.reply(Instant::now() + SETUP_TIMEOUT, None)? {
            (Reply::Done, _, _) => Ok(RemoteSpare { process }),
            other => Err(conversation.unexpected(other.0)),
        }
    }

    /// An environment of `spec` from its prepared `snapshot`, in `spare` if given (and
    /// warmed from the snapshot's template), else in a new VM process.
    pub fn start(
        &self,
        spec: &Arc<FunctionSpec>,
        snapshot: &Arc<Snapshot>,
        spare: Option<RemoteSpare>,
    ) -> Result<RemoteEnvironment, Failure> {
        let process = match spare {
            Some(spare) => spare.process,
            None => self.process(spec.memory_mib, "env")?,
        };
        let (state, files) = snapshot.export();
        let request = Request::Start {
            spec: spec.state(),
            snapshot: Box::new(state),
        };
        let spare = {
            let mut conversation = Conversation::new(&self.zygote, &process);
            conversation.send(&request, &[], &raw(&files))?;
            match conversation.reply(Instant::now() + SETUP_TIMEOUT, None)? {
                (Reply::Started { spare }, _, _) => spare,
                other => return Err(conversation.unexpected(other.0)),
            }
        };
        Ok(RemoteEnvironment {
            process,
            spec: spec.clone(),
            spare,
        })
    }
}

/// A VM process with a warmed spare VM.
pub struct RemoteSpare {
    process: VmProcess,
}

/// An execution environment in a VM process of its own.
pub struct RemoteEnvironment {
    process: VmProcess,
    spec: Arc<FunctionSpec>,
    /// Started in a spare VM.
    pub spare: bool,
}

impl RemoteEnvironment {
    pub fn spec(&self) -> &Arc<FunctionSpec> {
        &self.spec
    }

    /// Runs one invocation, as [`crate::function::Environment::invoke_logged`] does, in the
    /// VM process. `Err` means the environment is gone.
    pub fn invoke_logged(
        &mut self,
        jail: &Jail,
        payload: &[u8],
        extra_env: &[(String, String)],
        log: &LogSink,
        buffer: &mut LogBuffer,
    ) -> Result<Outcome, Failure> {
        let deadline = Instant::now() + self.spec.timeout + MARGIN;
        let request = Request::Invoke {
            env: extra_env.to_vec(),
        };
        let mut conversation = Conversation::new(&jail.zygote, &self.process);
        conversation.send(&request, payload, &[])?;
        let timeout = self.spec.timeout;
        match conversation.reply(deadline, Some((&self.spec, log, buffer))) {
            Ok((Reply::Outcome, outcome, _)) => {
                Outcome::decode(&outcome).map_err(|e| EnvError::BadReply(e).into())
            }
            Ok(other) => Err(conversation.unexpected(other.0)),
            // The VM process did not stop its VM at the deadline: the worker does.
            Err(_) if Instant::now() >= deadline => {
                self.process.kill();
                Err(Failure::Timeout(timeout))
            }
            Err(failure) => Err(failure),
        }
    }

    /// Returns the environment to the state right after init.
    pub fn reset(&mut self, jail: &Jail) -> Result<(), Failure> {
        let mut conversation = Conversation::new(&jail.zygote, &self.process);
        conversation.send(&Request::Reset, &[], &[])?;
        match conversation.reply(Instant::now() + SETUP_TIMEOUT, None)? {
            (Reply::Done, _, _) => Ok(()),
            other => Err(conversation.unexpected(other.0)),
        }
    }
}

/// Where the function's log goes while a VM process works on it.
type LogTo<'a> = Option<(&'a Arc<FunctionSpec>, &'a LogSink, &'a mut LogBuffer)>;

/// One request and its answer with a VM process.
struct Conversation<'a> {
    zygote: &'a Zygote,
    process: &'a VmProcess,
}

impl<'a> Conversation<'a> {
    fn new(zygote: &'a Zygote, process: &'a VmProcess) -> Conversation<'a> {
        Conversation { zygote, process }
    }

    fn send(&mut self, request: &Request, blob: &[u8], fds: &[RawFd]) -> Result<(), Failure> {
        self.process
            .channel
            .send_with(request, blob, fds)
            .map_err(|e| self.lost(e))
    }

    /// The final answer (log chunks before it go to `log`), by `deadline`.
    fn reply(
        &mut self,
        deadline: Instant,
        mut log: LogTo<'_>,
    ) -> Result<(Reply, Vec<u8>, Vec<OwnedFd>), Failure> {
        let channel = &self.process.channel;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.process.kill();
                return Err(
                    EnvError::Remote("the VM process did not answer in time".into()).into(),
                );
            }
            channel.set_timeout(Some(left)).map_err(|e| self.lost(e))?;
            let (reply, blob, fds) = channel.recv_with::<Reply>().map_err(|e| self.lost(e))?;
            match (reply, log.as_mut()) {
                (Reply::Log, Some((spec, sink, buffer))) => {
                    sink(spec, &blob);
                    buffer.push(&blob);
                }
                (Reply::Log, None) => {}
                (Reply::Failed(failure), _) => return Err(failure.into()),
                (reply, _) => return Ok((reply, blob, fds)),
            }
        }
    }

    /// The snapshot a template or prepare job answers.
    fn snapshot(&mut self, deadline: Instant, log: LogTo<'_>) -> Result<Arc<Snapshot>, Failure> {
        match self.reply(deadline, log)? {
            (Reply::Snapshot(state), _, fds) => import(*state, fds),
            other => Err(self.unexpected(other.0)),
        }
    }

    fn unexpected(&self, reply: Reply) -> Failure {
        self.process.kill();
        EnvError::Remote(format!("the VM process answered out of turn: {reply:?}")).into()
    }

    /// The channel failed: the process ended (how, if the zygote says) or misbehaved.
    fn lost(&self, e: ChannelError) -> Failure {
        self.process.kill();
        let how = match e {
            ChannelError::Closed => self.exit_of(),
            e => format!("{e} ({})", self.exit_of()),
        };
        EnvError::Remote(format!("the VM process {how}")).into()
    }

    fn exit_of(&self) -> String {
        self.zygote
            .wait_exit(self.process.pid, Duration::from_millis(500))
            .map_or_else(|| "ended".to_owned(), |how| format!("ended ({how})"))
    }
}

fn import(state: SnapshotState, fds: Vec<OwnedFd>) -> Result<Arc<Snapshot>, Failure> {
    Snapshot::import(state, fds).map_err(|e| EnvError::Restore(e).into())
}

fn raw(files: &[Arc<std::fs::File>]) -> Vec<RawFd> {
    files.iter().map(|file| file.as_raw_fd()).collect()
}
