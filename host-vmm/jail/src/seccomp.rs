//! The seccomp-bpf allow-list a VM process runs under: every system call not listed kills
//! the whole process (`SECCOMP_RET_KILL_PROCESS`), so a guest that takes over its VMM
//! can do nothing the VMM would not. Each allowed call says why it is there; see
//! `docs/isolation.md`.

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// One allowed system call and why a VM process makes it.
#[derive(Clone, Copy, Debug)]
pub struct Allowed {
    pub syscall: libc::c_long,
    pub name: &'static str,
    /// Allowed only when this argument (by index) is one of these values.
    pub only: Option<(u8, &'static [u64])>,
    pub why: &'static str,
}

/// An allow-list.
pub type Filter = &'static [Allowed];

macro_rules! allow {
    ($($name:ident $(($arg:literal in $values:expr))?: $why:literal,)*) => {
        &[$(Allowed {
            syscall: libc::$name,
            name: stringify!($name),
            only: allow!(@only $($arg, $values)?),
            why: $why,
        },)*]
    };
    (@only) => { None };
    (@only $arg:literal, $values:expr) => { Some(($arg, $values)) };
}

/// What a VM process needs to serve its channel: message passing with the worker, memory
/// for its own heap, threads' synchronisation and its exit.
pub const CHANNEL: Filter = allow! {
    SYS_recvmsg: "reads the worker's requests (and descriptors passed with them)",
    SYS_sendmsg: "answers the worker",
    SYS_read: "reads descriptors it already holds",
    SYS_write: "writes its log to stderr",
    SYS_close: "closes descriptors it was handed",
    SYS_fcntl(1 in &[libc::F_GETFD as u64]): "Rust's standard library checks a descriptor is open before closing it",
    SYS_poll: "waits for the worker's requests",
    SYS_ppoll: "waits for the worker's requests",
    SYS_mmap: "the allocator's large blocks",
    SYS_munmap: "the allocator's large blocks",
    SYS_mremap: "the allocator grows large blocks in place",
    SYS_brk: "the allocator's heap",
    SYS_madvise: "the allocator gives memory back",
    SYS_futex: "locks and condition variables",
    SYS_sched_yield: "spin loops in locks",
    SYS_rt_sigreturn: "returns from signal handlers",
    SYS_rt_sigprocmask: "Rust's runtime masks signals around thread work",
    SYS_sigaltstack: "Rust's stack-overflow handler",
    SYS_clock_gettime: "time, when the vDSO falls back to the system call",
    SYS_clock_nanosleep: "sleeps",
    SYS_nanosleep: "sleeps",
    SYS_getrandom: "hash maps' random keys",
    SYS_exit: "a thread ends",
    SYS_exit_group: "the process ends",
};

/// Why a filter could not be built or installed.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("building the filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("setting no_new_privs: {0}")]
    NoNewPrivs(#[source] std::io::Error),
    #[error("installing the filter: {0}")]
    Install(#[from] seccompiler::Error),
}

/// Installs `filter` on the calling thread, and on the threads it starts afterwards; sets
/// `no_new_privs` first, as an unprivileged process must.
pub fn install(filter: Filter) -> Result<(), SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for allowed in filter {
        let conditions = match allowed.only {
            None => Vec::new(),
            Some((arg, values)) => values
                .iter()
                .map(|value| {
                    let equal = SeccompCondition::new(
                        arg,
                        SeccompCmpArgLen::Dword,
                        SeccompCmpOp::Eq,
                        *value,
                    )?;
                    SeccompRule::new(vec![equal])
                })
                .collect::<Result<_, seccompiler::BackendError>>()?,
        };
        rules.insert(allowed.syscall, conditions);
    }
    let program: BpfProgram = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?
    .try_into()?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers and only ever removes privileges.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SeccompError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    seccompiler::apply_filter(&program)?;
    Ok(())
}
