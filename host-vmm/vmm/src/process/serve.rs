//! The VM process's side: one job at a time, as the worker asks, until its channel closes
//! (then the process, its VM and its memory go).

use std::os::fd::{OwnedFd, RawFd};
use std::sync::Arc;

use ember_jail::channel::ChannelError;
use ember_jail::Channel;

use super::{Probe, Reply, Request};
use crate::function::{Environment, Failure, FailureState, FunctionSpec, LogBuffer, LogSink};
use crate::vm::{Snapshot, SpareVm, VmConfig};

/// Serves the worker's requests until the channel closes; the exit code.
pub fn serve(channel: Channel) -> i32 {
    confined(channel, false)
}

/// [`serve`], also attempting [`Probe`]s (isolation tests only).
pub fn serve_with_probes(channel: Channel) -> i32 {
    confined(channel, true)
}

/// Has its vCPU and watchdog threads narrow their filters (see
/// [`crate::vm::confine_vcpu_threads`] and [`crate::vm::watchdog::confine`]), then serves.
fn confined(channel: Channel, probes: bool) -> i32 {
    use ember_jail::seccomp::{compile, VCPU, WATCHDOG};
    // Added to the process's filter (both apply), so each list on its own.
    match (compile(&[VCPU]), compile(&[WATCHDOG])) {
        (Ok(vcpu), Ok(watchdog)) => {
            crate::vm::confine_vcpu_threads(vcpu);
            crate::vm::watchdog::confine(watchdog);
        }
        (Err(e), _) | (_, Err(e)) => {
            log::error!("the threads' filters: {e}");
            return 1;
        }
    }
    Server::new(channel, probes).run()
}

/// What the VM process holds between the worker's requests.
struct Server {
    channel: Arc<Channel>,
    probes: bool,
    /// The template and the spare VM warmed from it, until a `Start` takes it.
    spare: Option<(Arc<Snapshot>, SpareVm)>,
    environment: Option<Environment>,
}

impl Server {
    fn new(channel: Channel, probes: bool) -> Server {
        Server {
            channel: Arc::new(channel),
            probes,
            spare: None,
            environment: None,
        }
    }

    fn run(mut self) -> i32 {
        loop {
            let (request, blob, fds) = match self.channel.recv_with::<Request>() {
                Ok(message) => message,
                Err(ChannelError::Closed) => return 0,
                Err(e) => {
                    log::error!("the worker's channel: {e}");
                    return 1;
                }
            };
            let (reply, reply_blob, reply_fds) = self.handle(request, blob, fds);
            let fds: Vec<RawFd> = reply_fds
                .iter()
                .map(std::os::fd::AsRawFd::as_raw_fd)
                .collect();
            if self.channel.send_with(&reply, &reply_blob, &fds).is_err() {
                return 1;
            }
        }
    }

    fn handle(
        &mut self,
        request: Request,
        blob: Vec<u8>,
        fds: Vec<OwnedFd>,
    ) -> (Reply, Vec<u8>, Vec<Arc<std::fs::File>>) {
        let failed = |failure: Failure| {
            (
                Reply::Failed(FailureState::from(&failure)),
                Vec::new(),
                Vec::new(),
            )
        };
        let import = |state: Box<crate::vm::SnapshotState>, fds| {
            Snapshot::import(*state, fds)
                .map_err(|e| Failure::from(crate::function::EnvError::Restore(e)))
        };
        match request {
            Request::Ping => (Reply::Pong, Vec::new(), Vec::new()),
            Request::Probe(probe) if self.probes => {
                (Reply::Probed(attempt(&probe)), Vec::new(), Vec::new())
            }
            Request::Probe(_) => (
                Reply::Refused("probes are for tests".into()),
                Vec::new(),
                Vec::new(),
            ),
            Request::Template {
                mem_mib,
                test_frames,
            } => {
                let config = VmConfig {
                    mem_mib,
                    test_frames,
                    ..VmConfig::default()
                };
                match Snapshot::of_fresh_guest(&config) {
                    Ok(snapshot) => exported(&snapshot),
                    Err(e) => failed(crate::function::EnvError::Template(e).into()),
                }
            }
            Request::Prepare { spec, template } => {
                let spec = FunctionSpec::from_state(spec, blob.into());
                let prepared = import(template, fds).and_then(|template| {
                    let sink = self.log_sink();
                    Environment::prepare_logged(&spec, &template, &sink, &mut LogBuffer::default())
                });
                match prepared {
                    Ok(snapshot) => exported(&snapshot),
                    Err(failure) => failed(failure),
                }
            }
            Request::Spare {
                template,
                warm_heap,
            } => {
                let spare = import(template, fds).and_then(|template| {
                    let spare = SpareVm::new(&template, warm_heap)
                        .map_err(crate::function::EnvError::WarmSpare)?;
                    Ok((template, spare))
                });
                match spare {
                    Ok(spare) => {
                        self.spare = Some(spare);
                        (Reply::Done, Vec::new(), Vec::new())
                    }
                    Err(failure) => failed(failure),
                }
            }
            Request::Start { spec, snapshot } => {
                let spec = FunctionSpec::from_state(spec, Arc::from(Vec::new()));
                let started = import(snapshot, fds).and_then(|snapshot| match self.spare.take() {
                    Some((template, spare)) => {
                        let snapshot = snapshot.based_on(&template);
                        Environment::from_spare(spec.clone(), snapshot.clone(), spare).or_else(
                            |e| {
                                log::warn!("a spare VM failed, starting a new one: {e}");
                                Environment::start(spec, snapshot, false)
                            },
                        )
                    }
                    None => Environment::start(spec, snapshot, false),
                });
                match started {
                    Ok(environment) => {
                        let spare = environment.spare;
                        self.environment = Some(environment);
                        (Reply::Started { spare }, Vec::new(), Vec::new())
                    }
                    Err(failure) => failed(failure),
                }
            }
            Request::Invoke { env } => {
                let sink = self.log_sink();
                let Some(environment) = self.environment.as_mut() else {
                    return (
                        Reply::Refused("no environment".into()),
                        Vec::new(),
                        Vec::new(),
                    );
                };
                match environment.invoke_logged(&blob, &env, &sink, &mut LogBuffer::default()) {
                    Ok(outcome) => (Reply::Outcome, outcome.encode(), Vec::new()),
                    Err(failure) => failed(failure),
                }
            }
            Request::Reset => {
                let Some(environment) = self.environment.as_mut() else {
                    return (
                        Reply::Refused("no environment".into()),
                        Vec::new(),
                        Vec::new(),
                    );
                };
                match environment.reset() {
                    Ok(()) => (Reply::Done, Vec::new(), Vec::new()),
                    Err(failure) => failed(failure),
                }
            }
        }
    }

    /// Sends each chunk of the function's log to the worker as it comes.
    fn log_sink(&self) -> LogSink {
        let channel = self.channel.clone();
        Arc::new(move |_: &FunctionSpec, chunk: &[u8]| {
            let _ = channel.send_with(&Reply::Log, chunk, &[]);
        })
    }
}

/// A snapshot's state and memfds as the reply.
fn exported(snapshot: &Arc<Snapshot>) -> (Reply, Vec<u8>, Vec<Arc<std::fs::File>>) {
    let (state, files) = snapshot.export();
    (Reply::Snapshot(Box::new(state)), Vec::new(), files)
}

/// Makes `probe`'s system call directly (no library path that might refuse first) and
/// says how it returned, if it does.
fn attempt(probe: &Probe) -> String {
    let rc = match probe {
        Probe::OpenFile(path) => {
            let path = std::ffi::CString::new(path.as_str()).unwrap_or_default();
            // SAFETY: a valid C string; the descriptor, if any, is never used.
            unsafe {
                libc::syscall(
                    libc::SYS_openat,
                    libc::AT_FDCWD,
                    path.as_ptr(),
                    libc::O_RDONLY,
                )
            }
        }
        // SAFETY: creating a socket touches no memory of this process.
        Probe::TcpSocket => unsafe {
            libc::syscall(libc::SYS_socket, libc::AF_INET, libc::SOCK_STREAM, 0)
        },
        Probe::Exec(path) => {
            let path = std::ffi::CString::new(path.as_str()).unwrap_or_default();
            let argv = [path.as_ptr(), std::ptr::null()];
            let envp = [std::ptr::null::<libc::c_char>()];
            // SAFETY: valid, null-terminated argument and environment arrays.
            unsafe {
                libc::syscall(
                    libc::SYS_execve,
                    path.as_ptr(),
                    argv.as_ptr(),
                    envp.as_ptr(),
                )
            }
        }
        // SAFETY: PTRACE_ATTACH takes a pid and no memory of this process.
        Probe::Ptrace(pid) => unsafe {
            libc::syscall(
                libc::SYS_ptrace,
                libc::PTRACE_ATTACH,
                *pid as libc::pid_t,
                0,
                0,
            )
        },
    };
    if rc < 0 {
        format!("refused: {}", std::io::Error::last_os_error())
    } else {
        format!("returned {rc}")
    }
}
