//! The VM process's side of its channel to the worker (see `docs/isolation.md`): it runs
//! sandboxed, forked by the zygote, and does only what the worker asks over the channel.
//!
//! The worker's requests so far: `Ping`, which proves the process is alive and serving;
//! and, only in a zygote started with `--test-probes` for the isolation tests, `Probe`,
//! which makes the process try one thing a guest that took over its VMM might (open a
//! host file, open a socket, exec a program, ptrace the worker) so the tests can see the
//! sandbox stop it.

use ember_jail::Channel;
use serde::{Deserialize, Serialize};

/// What the worker asks of a VM process.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Ping,
    /// Test-only (`--test-probes`): attempt a forbidden operation.
    Probe(Probe),
}

/// A VM process's answer.
#[derive(Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Pong,
    /// The probe's system call returned (rather than the process being killed): how.
    Probed(String),
    /// The request is not served by this process.
    Refused(String),
}

/// Forbidden operations the isolation tests make a VM process attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Probe {
    OpenFile(String),
    TcpSocket,
    Exec(String),
    Ptrace(u32),
}

/// Serves the worker's requests until the channel closes; the exit code.
pub fn serve(channel: Channel) -> i32 {
    serve_requests(&channel, false)
}

/// [`serve`], also attempting [`Probe`]s.
pub fn serve_with_probes(channel: Channel) -> i32 {
    serve_requests(&channel, true)
}

fn serve_requests(channel: &Channel, probes: bool) -> i32 {
    loop {
        let reply = match channel.recv::<Request>() {
            Ok((Request::Ping, _)) => Reply::Pong,
            Ok((Request::Probe(probe), _)) if probes => Reply::Probed(attempt(&probe)),
            Ok((Request::Probe(_), _)) => Reply::Refused("probes are for tests".into()),
            Err(ember_jail::channel::ChannelError::Closed) => return 0,
            Err(e) => {
                log::error!("the worker's channel: {e}");
                return 1;
            }
        };
        if channel.send(&reply, &[]).is_err() {
            return 1;
        }
    }
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
