//! The zygote: a small single-threaded process, started once per worker from the `ember-vm`
//! program, that forks every VM process. Forking from it rather than from the worker means
//! a VM process starts with nothing of the worker's (no keys, no code cache, no sockets,
//! no threads) and costs no `exec`.
//!
//! For each VM the zygote forks a child that unshares its mount, UTS, IPC, network and PID
//! namespaces and forks again: the grandchild, PID 1 of its own namespace, enters the
//! sandbox ([`crate::sandbox::enter`]), says `Ready` on its channel and runs the work. The
//! zygote is their subreaper: it reaps them, removes their cgroups and reports each exit
//! to the worker. It dies with the worker (`PR_SET_PDEATHSIG`), and kills its VMs when the
//! worker's channel closes.

use std::collections::{HashMap, VecDeque};
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sched::{unshare, CloneFlags};
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, pipe, ForkResult, Pid};
use serde::{Deserialize, Serialize};

use crate::cgroup::Limits;
use crate::channel::{Channel, ChannelError};
use crate::sandbox::{self, JailConfig};
use crate::seccomp::Filter;

/// The descriptor the zygote finds its channel to the worker on.
pub const CONTROL_FD: i32 = 3;

/// How long the worker waits for a VM process to be forked and sandboxed.
const SPAWN_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Serialize, Deserialize)]
enum Request {
    Spawn { name: String, limits: Limits },
}

#[derive(Debug, Serialize, Deserialize)]
enum Report {
    /// Comes with the worker's end of the VM's channel.
    Spawned {
        name: String,
        pid: u32,
    },
    Failed {
        name: String,
        reason: String,
    },
    Exited {
        pid: u32,
        status: String,
    },
}

/// A VM process's first word on its channel.
#[derive(Debug, Serialize, Deserialize)]
pub enum Started {
    Ready,
    Failed(String),
}

#[derive(Debug, thiserror::Error)]
pub enum ZygoteError {
    #[error("starting the zygote ({program}): {source}")]
    Start {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the zygote: {0}")]
    Channel(#[from] ChannelError),
    #[error("the zygote is gone")]
    Gone,
    #[error("VM process {name}: {reason}")]
    Spawn { name: String, reason: String },
}

/// The worker's handle on its zygote.
pub struct Zygote {
    process: Mutex<Child>,
    control: Arc<Channel>,
    spawned: Mutex<mpsc::Receiver<Result<(u32, Channel), String>>>,
    exits: Arc<(Mutex<Exits>, Condvar)>,
}

/// How the last VM processes ended, for whoever waits for one.
#[derive(Default)]
struct Exits {
    recent: VecDeque<(u32, String)>,
    gone: bool,
}

/// Exits remembered (a worker runs VM processes without end; few are waited for).
const EXITS_KEPT: usize = 256;

/// A sandboxed VM process, ready for work on its channel. Dropping it kills the process
/// (through a pidfd, so never another process that reused its pid).
#[derive(Debug)]
pub struct VmProcess {
    pub name: String,
    /// Its process id in the worker's PID namespace.
    pub pid: u32,
    pub channel: Channel,
    pidfd: OwnedFd,
}

impl VmProcess {
    /// Ends the process now, whatever it is doing.
    pub fn kill(&self) {
        // SAFETY: pidfd_send_signal on a pidfd this handle owns, with no siginfo.
        unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.pidfd.as_raw_fd(),
                libc::SIGKILL,
                std::ptr::null::<libc::siginfo_t>(),
                0,
            );
        }
    }
}

impl Drop for VmProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Zygote {
    /// Starts `program` (`ember-vm`) as the zygote with `args`, handing it `config`.
    pub fn start(
        program: &Path,
        config: &JailConfig,
        args: &[&str],
    ) -> Result<Zygote, ZygoteError> {
        let (ours, theirs) = Channel::pair()?;
        let config = serde_json::to_string(config).expect("a JailConfig serializes");
        let theirs_fd = theirs.fd();
        let mut command = Command::new(program);
        command
            .arg("zygote")
            .args(["--config", &config])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null());
        // SAFETY: between fork and exec only dup2, which is async-signal-safe, runs; it
        // puts the zygote's channel at CONTROL_FD without close-on-exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut command, move || {
                if libc::dup2(theirs_fd, CONTROL_FD) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let process = command.spawn().map_err(|source| ZygoteError::Start {
            program: program.display().to_string(),
            source,
        })?;
        drop(theirs);
        let control = Arc::new(ours);
        let exits: Arc<(Mutex<Exits>, Condvar)> = Arc::default();
        let (spawned_tx, spawned) = mpsc::channel();
        let (reader, exits_seen) = (control.clone(), exits.clone());
        std::thread::Builder::new()
            .name("zygote-reports".into())
            .spawn(move || read_reports(&reader, &spawned_tx, &exits_seen))
            .map_err(|source| ZygoteError::Start {
                program: "the zygote's reader thread".into(),
                source,
            })?;
        Ok(Zygote {
            process: Mutex::new(process),
            control,
            spawned: Mutex::new(spawned),
            exits,
        })
    }

    /// Forks VM process `name`, sandboxed with `limits`, and waits until it is ready.
    pub fn spawn(&self, name: &str, limits: &Limits) -> Result<VmProcess, ZygoteError> {
        let spawned = self.spawned.lock().unwrap();
        let request = Request::Spawn {
            name: name.to_owned(),
            limits: *limits,
        };
        self.control.send(&request, &[])?;
        let failed = |reason: String| ZygoteError::Spawn {
            name: name.to_owned(),
            reason,
        };
        let (pid, channel) = spawned
            .recv_timeout(SPAWN_TIMEOUT)
            .map_err(|_| ZygoteError::Gone)?
            .map_err(failed)?;
        // SAFETY: pidfd_open takes a pid and flags; the descriptor it returns is owned here.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid as libc::pid_t, 0) };
        if pidfd < 0 {
            return Err(failed(format!(
                "pidfd_open: {}",
                std::io::Error::last_os_error()
            )));
        }
        // SAFETY: a new descriptor nothing else owns.
        let pidfd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(pidfd as i32) };
        channel.set_timeout(Some(SPAWN_TIMEOUT))?;
        let started = channel.recv::<Started>();
        channel.set_timeout(None)?;
        match started {
            Ok((Started::Ready, _)) => Ok(VmProcess {
                name: name.to_owned(),
                pid,
                channel,
                pidfd,
            }),
            Ok((Started::Failed(reason), _)) => Err(failed(reason)),
            Err(e) => Err(failed(format!("ended before it was ready: {e}"))),
        }
    }

    /// How VM process `pid` ended (`exit code N` or `killed by SIGNAL`), once it has,
    /// waiting up to `timeout`.
    pub fn wait_exit(&self, pid: u32, timeout: Duration) -> Option<String> {
        let (exits, changed) = &*self.exits;
        let deadline = Instant::now() + timeout;
        let mut exits = exits.lock().unwrap();
        loop {
            if let Some(at) = exits.recent.iter().position(|(p, _)| *p == pid) {
                return exits.recent.remove(at).map(|(_, status)| status);
            }
            let left = deadline.checked_duration_since(Instant::now())?;
            if exits.gone {
                return None;
            }
            exits = changed.wait_timeout(exits, left).unwrap().0;
        }
    }
}

impl std::fmt::Debug for Zygote {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pid = self.process.lock().map(|p| p.id()).unwrap_or(0);
        f.debug_struct("Zygote").field("pid", &pid).finish()
    }
}

impl Drop for Zygote {
    /// Ending its channel makes the zygote kill its VMs and exit.
    fn drop(&mut self) {
        self.control.shutdown();
        let _ = self.process.get_mut().unwrap().wait();
    }
}

fn read_reports(
    reader: &Channel,
    spawned: &mpsc::Sender<Result<(u32, Channel), String>>,
    exits: &(Mutex<Exits>, Condvar),
) {
    loop {
        match reader.recv::<Report>() {
            Ok((Report::Spawned { pid, .. }, mut fds)) if fds.len() == 1 => {
                let channel = Channel::from_fd(fds.remove(0));
                let _ = spawned.send(Ok((pid, channel)));
            }
            Ok((Report::Spawned { name, .. }, _)) => {
                let _ = spawned.send(Err(format!("{name}: spawned without its channel")));
            }
            Ok((Report::Failed { reason, .. }, _)) => {
                let _ = spawned.send(Err(reason));
            }
            Ok((Report::Exited { pid, status }, _)) => {
                let mut seen = exits.0.lock().unwrap();
                if seen.recent.len() == EXITS_KEPT {
                    seen.recent.pop_front();
                }
                seen.recent.push_back((pid, status));
                exits.1.notify_all();
            }
            Err(e) => {
                if !matches!(e, ChannelError::Closed) {
                    log::error!("the zygote's reports: {e}");
                }
                exits.0.lock().unwrap().gone = true;
                exits.1.notify_all();
                return;
            }
        }
    }
}

/// The zygote's life: serves the worker's requests on [`CONTROL_FD`] until it closes,
/// forking VM processes that enter the sandbox of `config` under `filters`, keeping the
/// descriptors `keep` (`/dev/kvm`), and then run `work` on their channel (its result is
/// their exit code).
pub fn serve(
    config: &JailConfig,
    filters: &[Filter],
    keep: &[RawFd],
    work: fn(Channel) -> i32,
) -> ! {
    // SAFETY: CONTROL_FD was set up by `Zygote::start` for this process alone.
    let control =
        Channel::from_fd(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(CONTROL_FD) });
    // SAFETY: prctl with integer arguments changes only this process's own settings.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL, 0, 0, 0);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
    }
    let mut vms: HashMap<u32, String> = HashMap::new();
    loop {
        let mut fds = [PollFd::new(control_borrow(&control), PollFlags::POLLIN)];
        let ready = poll(&mut fds, PollTimeout::from(50u16)).unwrap_or(0);
        if ready > 0 {
            match control.recv::<Request>() {
                Ok((Request::Spawn { name, limits }, _)) => {
                    let report = match fork_vm(config, &name, &limits, filters, keep, work) {
                        Ok((pid, channel)) => {
                            vms.insert(pid, name.clone());
                            let report = Report::Spawned { name, pid };
                            let _ = control.send(&report, &[channel.as_raw_fd()]);
                            continue;
                        }
                        Err(reason) => Report::Failed { name, reason },
                    };
                    let _ = control.send(&report, &[]);
                }
                Err(ChannelError::Malformed(e)) => log::error!("zygote: {e}"),
                Err(_) => break,
            }
        }
        reap(config, &mut vms, Some(&control));
    }
    for pid in vms.keys() {
        let _ = kill(Pid::from_raw(*pid as i32), Signal::SIGKILL);
    }
    while !vms.is_empty() {
        reap(config, &mut vms, None);
        std::thread::sleep(Duration::from_millis(5));
    }
    std::process::exit(0)
}

fn control_borrow(control: &Channel) -> std::os::fd::BorrowedFd<'_> {
    // SAFETY: the descriptor lives as long as `control`, which outlives the borrow.
    unsafe { std::os::fd::BorrowedFd::borrow_raw(control.fd()) }
}

/// Reaps ended VM processes, removes their cgroups and reports them.
fn reap(config: &JailConfig, vms: &mut HashMap<u32, String>, control: Option<&Channel>) {
    while let Ok(status) = waitpid(None, Some(WaitPidFlag::WNOHANG)) {
        let (pid, how) = match status {
            WaitStatus::Exited(pid, code) => (pid, format!("exit code {code}")),
            WaitStatus::Signaled(pid, signal, _) => (pid, format!("killed by {signal}")),
            _ => break,
        };
        let pid = pid.as_raw() as u32;
        if let Some(name) = vms.remove(&pid) {
            config.cgroups.remove(&name);
            if let Some(control) = control {
                let _ = control.send(&Report::Exited { pid, status: how }, &[]);
            }
        }
    }
}

/// Forks VM process `name` in its own namespaces; returns its pid and the worker's end of
/// its channel.
fn fork_vm(
    config: &JailConfig,
    name: &str,
    limits: &Limits,
    filters: &[Filter],
    keep: &[RawFd],
    work: fn(Channel) -> i32,
) -> Result<(u32, OwnedFd), String> {
    let (ours, theirs) = Channel::pair().map_err(|e| e.to_string())?;
    let (pid_read, pid_write) = pipe().map_err(|e| e.to_string())?;
    // SAFETY: the zygote is single-threaded, so the child may do anything after fork.
    match unsafe { fork() }.map_err(|e| e.to_string())? {
        ForkResult::Child => {
            drop(ours);
            drop(pid_read);
            let code = in_new_namespaces(
                config,
                name,
                limits,
                (filters, keep),
                work,
                theirs,
                pid_write,
            );
            // SAFETY: _exit ends this process without running the zygote's exit handlers.
            unsafe { libc::_exit(code) }
        }
        ForkResult::Parent { child } => {
            drop(theirs);
            drop(pid_write);
            let _ = waitpid(child, None);
            let mut bytes = [0u8; 4];
            let read = nix::unistd::read(&pid_read, &mut bytes).map_err(|e| e.to_string())?;
            if read != 4 {
                return Err("could not create its namespaces".into());
            }
            Ok((u32::from_le_bytes(bytes), ours.into_fd()))
        }
    }
}

/// In the first child: new namespaces, then the VM process proper (PID 1 there), whose
/// pid it reports before it exits.
fn in_new_namespaces(
    config: &JailConfig,
    name: &str,
    limits: &Limits,
    (filters, keep): (&[Filter], &[RawFd]),
    work: fn(Channel) -> i32,
    channel: Channel,
    pid_write: OwnedFd,
) -> i32 {
    let namespaces = CloneFlags::CLONE_NEWNS
        | CloneFlags::CLONE_NEWUTS
        | CloneFlags::CLONE_NEWIPC
        | CloneFlags::CLONE_NEWNET
        | CloneFlags::CLONE_NEWPID;
    if let Err(e) = unshare(namespaces) {
        let _ = channel.send(&Started::Failed(format!("unshare: {e}")), &[]);
        return 1;
    }
    // SAFETY: still single-threaded.
    match unsafe { fork() } {
        Ok(ForkResult::Child) => {
            drop(pid_write);
            let keep: Vec<RawFd> = [channel.fd(), 0, 1, 2]
                .into_iter()
                .chain(keep.iter().copied())
                .collect();
            match sandbox::enter(config, name, limits, &keep, filters) {
                Ok(()) => match channel.send(&Started::Ready, &[]) {
                    Ok(()) => work(channel),
                    Err(_) => 1,
                },
                Err(e) => {
                    let _ = channel.send(&Started::Failed(e.to_string()), &[]);
                    1
                }
            }
        }
        Ok(ForkResult::Parent { child }) => {
            let pid = (child.as_raw() as u32).to_le_bytes();
            i32::from(nix::unistd::write(&pid_write, &pid) != Ok(4))
        }
        Err(e) => {
            let _ = channel.send(&Started::Failed(format!("fork: {e}")), &[]);
            1
        }
    }
}
