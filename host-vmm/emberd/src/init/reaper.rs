//! Reaping: PID 1 inherits every orphaned process, and an unreaped one stays a zombie.
//! SIGCHLD is blocked in every thread (init blocks it before starting any) and taken by
//! one thread, which then reaps every child that has ended.
//!
//! It reaps any child, so nothing else in this process may wait for a child of its own:
//! true today (emberd starts no processes). When the VMM moves into processes of its own
//! (DESIGN.md, "Process model"), those should be children of a process other than PID 1.

use nix::errno::Errno;
use nix::sys::signal::{SigSet, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Blocks SIGCHLD in this thread and so in every thread it starts later. Call before
/// any thread starts.
pub fn block_sigchld() -> nix::Result<()> {
    let mut set = SigSet::empty();
    set.add(Signal::SIGCHLD);
    set.thread_block()
}

/// Starts the reaper thread.
pub fn start() -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("reaper".into())
        .spawn(|| {
            let mut set = SigSet::empty();
            set.add(Signal::SIGCHLD);
            loop {
                if set.wait().is_err() {
                    continue;
                }
                reap_ended();
            }
        })
        .map(drop)
}

/// Reaps every child that has ended, without waiting for the others.
fn reap_ended() {
    loop {
        match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
            Ok(status) => log::debug!("reaped {status:?}"),
            Err(Errno::EINTR) => continue,
            Err(errno) => {
                log::warn!("reaping children: {errno}");
                return;
            }
        }
    }
}
