//! The seccomp-bpf allow-list a VM process runs under: every system call not listed kills
//! the whole process (`SECCOMP_RET_KILL_PROCESS`), so a guest that takes over its VMM
//! can do nothing the VMM would not. Each allowed call says why it is there; see
//! `docs/isolation.md`.

use std::collections::BTreeMap;

pub use seccompiler::BpfProgram;
use seccompiler::{
    SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter, SeccompRule,
    TargetArch,
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

/// Every allow-list, by name, for the documentation and its test.
pub const ALL: &[(&str, Filter)] = &[
    ("CHANNEL", CHANNEL),
    ("VM", VM),
    ("VCPU", VCPU),
    ("WATCHDOG", WATCHDOG),
];

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
    SYS_recvfrom: "peeks at the size of the worker's next request",
    SYS_sendmsg: "answers the worker (and passes snapshots' memfds)",
    SYS_write: "writes its log to stderr",
    SYS_close: "closes descriptors it was handed, and its VM's when the VM ends",
    SYS_fcntl(1 in &[libc::F_GETFD as u64]): "Rust's standard library checks a descriptor is open before closing it (debug builds)",
    SYS_setsockopt: "bounds how long it waits on its channel",
    SYS_mmap: "the allocator's large blocks",
    SYS_munmap: "the allocator's large blocks",
    SYS_mremap: "the allocator grows large blocks in place",
    SYS_mprotect: "the allocator's arenas and thread stacks' guard pages",
    SYS_brk: "the allocator's heap",
    SYS_madvise: "the allocator gives memory back",
    SYS_futex: "locks and condition variables",
    SYS_sched_yield: "spin loops in locks",
    SYS_rt_sigreturn: "returns from signal handlers",
    SYS_rt_sigprocmask: "the C library masks signals around thread work",
    SYS_sigaltstack: "Rust's stack-overflow handler",
    SYS_clock_gettime: "time, when the vDSO falls back to the system call",
    SYS_clock_nanosleep: "sleeps",
    SYS_nanosleep: "sleeps",
    SYS_getrandom: "hash maps' random keys, and each invocation's random seed",
    SYS_exit: "a thread ends",
    SYS_exit_group: "the process ends",
};

/// What a VM process running a micro-VM needs beyond [`CHANNEL`] (measured per thread
/// with strace over the VMM's tests and a release build; `docs/isolation.md`).
pub const VM: Filter = allow! {
    SYS_ioctl(1 in KVM_IOCTLS): "KVM: create the VM and its vCPU, run it, move registers and the dirty log (these requests only)",
    SYS_memfd_create: "a snapshot's memory (a template's, or a version's after its init phase)",
    SYS_ftruncate: "sizes a snapshot's memfd",
    SYS_pread64: "copies snapshot pages back (reset, a spare becoming an environment)",
    SYS_pwrite64: "writes the pages a version's init phase changed into its snapshot",
    SYS_lseek(2 in &[libc::SEEK_DATA as u64, libc::SEEK_HOLE as u64]): "finds the pages of a snapshot that hold data",
    SYS_clone(0 in &[THREAD_FLAGS, THREAD_FLAGS | CLONE_DETACHED]): "starts the vCPU and watchdog threads (threads only, no new processes or namespaces)",
    SYS_clone3: "refused with ENOSYS (its flags cannot be checked), so the C library falls back to clone",
    SYS_set_robust_list: "the C library, at thread start",
    SYS_rseq: "the C library, at thread start",
    SYS_prctl(0 in &[libc::PR_SET_NAME as u64, libc::PR_SET_NO_NEW_PRIVS as u64]): "names its threads; no_new_privs (already set) before a thread narrows its filter",
    SYS_seccomp(0 in &[libc::SECCOMP_SET_MODE_FILTER as u64]): "a thread narrows its own filter (filters only ever add restrictions)",
    SYS_sched_getaffinity: "the C library, at thread start",
    SYS_gettid: "the vCPU thread records its id, to be kicked out of KVM_RUN",
    SYS_getpid: "names VMs; the C library's pthread_kill",
    SYS_tgkill(2 in &[SIGRTMIN_GLIBC, SIGRTMIN_MUSL]): "kicks the vCPU thread out of KVM_RUN (this signal only)",
    SYS_tkill(1 in &[SIGRTMIN_GLIBC, SIGRTMIN_MUSL]): "kicks the vCPU thread out of KVM_RUN (musl; this signal only)",
    SYS_rt_sigaction: "installs the vCPU kick's no-op handler",
    SYS_fstat: "checks the size of a snapshot's memfd it is handed",
    SYS_newfstatat(3 in &[libc::AT_EMPTY_PATH as u64]): "the same, as the C library makes fstat (on a descriptor, not a path)",
    SYS_statx: "refused with ENOSYS, so Rust's standard library falls back to fstat (no paths)",
    SYS_openat: "refused with ENOSYS: the C library's allocator reads /proc and /sys once (nothing is there)",
    SYS_open: "refused with ENOSYS, as openat",
};

/// What a VM process's vCPU thread needs: the thread that runs the guest and emulates its
/// devices, so the first a guest exploiting the VMM would hold. Added to [`CHANNEL`] and
/// [`VM`] on that thread alone, it leaves out the channel to the worker, new threads and
/// new memfds.
pub const VCPU: Filter = allow! {
    SYS_ioctl(1 in KVM_IOCTLS): "KVM: run the vCPU, move its registers and the dirty log",
    SYS_pread64: "copies snapshot pages back (reset, a spare becoming an environment)",
    SYS_pwrite64: "writes changed pages into a snapshot",
    SYS_lseek(2 in &[libc::SEEK_DATA as u64, libc::SEEK_HOLE as u64]): "finds a snapshot's pages that hold data",
    SYS_mmap: "makes warmed guest pages its own; the allocator",
    SYS_munmap: "unmaps guest memory when the VM ends; the allocator",
    SYS_mremap: "the allocator",
    SYS_mprotect: "the allocator",
    SYS_brk: "the allocator",
    SYS_madvise: "populates warmed pages, gives unused ones back",
    SYS_futex: "the hub's and the pause handshake's locks and condition variables",
    SYS_sched_yield: "spin loops in locks",
    SYS_rt_sigaction: "installs the kick's no-op handler (once)",
    SYS_rt_sigreturn: "returns from the kick's handler",
    SYS_rt_sigprocmask: "the C library, at thread exit",
    SYS_sigaltstack: "Rust's stack-overflow handler, at thread exit",
    SYS_gettid: "records its id, to be kicked",
    SYS_getrandom: "hash maps' random keys",
    SYS_write: "logs guest lines and its exit",
    SYS_close: "closes the VM's descriptors when the VM ends",
    SYS_fcntl(1 in &[libc::F_GETFD as u64]): "Rust's debug check before closing",
    SYS_openat: "refused with ENOSYS by the process's filter (the C library's allocator)",
    SYS_clock_nanosleep: "sleeps",
    SYS_exit: "the thread ends",
    SYS_exit_group: "a panic ends the process",
};

/// What a VM process's watchdog thread needs: it waits for the earliest deadline and then
/// stops that VM (flags, condition variables) and kicks its vCPU thread. Added to
/// [`CHANNEL`] and [`VM`] on that thread alone, it leaves out the channel, KVM, threads,
/// memfds and snapshot files.
pub const WATCHDOG: Filter = allow! {
    SYS_futex: "waits for the next deadline; wakes the VM's waiting threads",
    SYS_clock_gettime: "time, when the vDSO falls back to the system call",
    SYS_getpid: "the C library's pthread_kill",
    SYS_tgkill(2 in &[SIGRTMIN_GLIBC, SIGRTMIN_MUSL]): "kicks a vCPU thread out of KVM_RUN (this signal only)",
    SYS_tkill(1 in &[SIGRTMIN_GLIBC, SIGRTMIN_MUSL]): "the same, as musl makes it",
    SYS_rt_sigprocmask: "the C library blocks signals around pthread_kill",
    SYS_mmap: "the allocator",
    SYS_munmap: "the allocator",
    SYS_mremap: "the allocator",
    SYS_mprotect: "the allocator",
    SYS_brk: "the allocator",
    SYS_madvise: "the allocator",
    SYS_sched_yield: "spin loops in locks",
    SYS_write: "logs a VM stopped at its deadline",
    SYS_exit_group: "a panic ends the process",
};

/// Allowed by [`install`]'s filter, then refused with `ENOSYS` by a second one.
const REFUSED: &[libc::c_long] = &[
    libc::SYS_clone3,
    libc::SYS_statx,
    libc::SYS_openat,
    libc::SYS_open,
];

/// The flags of a thread (`pthread_create`); musl adds `CLONE_DETACHED`.
const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM
    | libc::CLONE_SETTLS
    | libc::CLONE_PARENT_SETTID
    | libc::CLONE_CHILD_CLEARTID) as u64;
const CLONE_DETACHED: u64 = 0x0040_0000;

/// The kick signal: glibc's and musl's SIGRTMIN.
const SIGRTMIN_GLIBC: u64 = 34;
const SIGRTMIN_MUSL: u64 = 35;

/// The KVM requests the VMM makes (all 14 after setup; `KVM_GET_SUPPORTED_CPUID` runs in
/// the zygote, before any VM process exists).
const KVM_IOCTLS: &[u64] = &[
    0xAE01,     // KVM_CREATE_VM
    0xAE04,     // KVM_GET_VCPU_MMAP_SIZE
    0xAE41,     // KVM_CREATE_VCPU
    0x4010AE42, // KVM_GET_DIRTY_LOG
    0x4020AE46, // KVM_SET_USER_MEMORY_REGION
    0xAE80,     // KVM_RUN
    0x8090AE81, // KVM_GET_REGS
    0x4090AE82, // KVM_SET_REGS
    0x8138AE83, // KVM_GET_SREGS
    0x4138AE84, // KVM_SET_SREGS
    0x81A0AE8C, // KVM_GET_FPU
    0x41A0AE8D, // KVM_SET_FPU
    0x4008AE90, // KVM_SET_CPUID2
    0xAEA3,     // KVM_GET_TSC_KHZ
];

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

/// The union of `filters` as a BPF program that kills the process on anything else.
pub fn compile(filters: &[Filter]) -> Result<BpfProgram, SeccompError> {
    Ok(SeccompFilter::new(
        rules(filters)?,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        TargetArch::x86_64,
    )?
    .try_into()?)
}

/// Adds `program` to the calling thread's filters only (threads it starts inherit them):
/// how a thread narrows what the process may do.
pub fn apply_to_thread(program: &BpfProgram) -> Result<(), SeccompError> {
    seccompiler::apply_filter(program)?;
    Ok(())
}

fn rules(filters: &[Filter]) -> Result<BTreeMap<i64, Vec<SeccompRule>>, SeccompError> {
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    for allowed in filters.iter().copied().flatten() {
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
        rules.entry(allowed.syscall).or_default().extend(conditions);
    }
    Ok(rules)
}

/// Installs the union of `filters` on the calling thread, and on the threads it starts
/// afterwards; sets `no_new_privs` first, as an unprivileged process must.
pub fn install(filters: &[Filter]) -> Result<(), SeccompError> {
    let rules = rules(filters)?;
    // SAFETY: PR_SET_NO_NEW_PRIVS takes integers and only ever removes privileges.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(SeccompError::NoNewPrivs(std::io::Error::last_os_error()));
    }
    // First a filter that turns some calls into ENOSYS (when two filters disagree, the
    // stricter answer wins), then the allow-list: installed last, it must not allow the
    // calls that install filters.
    let refused = REFUSED
        .iter()
        .filter(|syscall| rules.contains_key(syscall))
        .map(|syscall| (*syscall, Vec::new()))
        .collect::<BTreeMap<_, _>>();
    if !refused.is_empty() {
        let program: BpfProgram = SeccompFilter::new(
            refused,
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            TargetArch::x86_64,
        )?
        .try_into()?;
        seccompiler::apply_filter(&program)?;
    }
    let program = compile(filters)?;
    seccompiler::apply_filter(&program)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_filter_compiles_and_says_why_for_each_call() {
        for (name, filter) in ALL {
            compile(&[filter]).unwrap_or_else(|e| panic!("{name}: {e}"));
            for allowed in *filter {
                assert!(
                    !allowed.why.is_empty(),
                    "{name}: {} has no reason",
                    allowed.name
                );
            }
        }
        compile(&[CHANNEL, VM]).unwrap();
    }

    #[test]
    fn the_vcpu_and_watchdog_threads_get_no_channel_threads_or_memfds() {
        for (name, filter) in [("VCPU", VCPU), ("WATCHDOG", WATCHDOG)] {
            let names: Vec<&str> = filter.iter().map(|a| a.name).collect();
            for forbidden in [
                "SYS_recvmsg",
                "SYS_sendmsg",
                "SYS_clone",
                "SYS_clone3",
                "SYS_memfd_create",
                "SYS_socket",
                "SYS_execve",
            ] {
                assert!(!names.contains(&forbidden), "{name}: {forbidden}");
            }
        }
        let watchdog: Vec<&str> = WATCHDOG.iter().map(|a| a.name).collect();
        assert!(
            !watchdog.contains(&"SYS_ioctl"),
            "the watchdog needs no KVM"
        );
    }
}
