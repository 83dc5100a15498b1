//! Entering the sandbox, in the process that will run guest code, before it does: each step
//! takes something away, in an order where every step still has what it needs.
//!
//! 1. its own cgroup (memory, pids, CPU share), joined while `/sys/fs/cgroup` is visible;
//! 2. its own host name (UTS namespace) and process name, both `ember-vm`;
//! 3. a new root: a tiny read-only tmpfs mounted on the empty directory `root`, pivoted
//!    into, with the old root detached, so no host path can be opened (mount namespace);
//!    over an initramfs, which cannot be pivoted away, moved over `/` and chrooted into;
//! 4. every inherited file descriptor closed but the ones it keeps (its channel, `/dev/kvm`);
//! 5. rlimits: no core dumps (guest memory must not land on disk) and a bounded descriptor
//!    count; and not dumpable, so no process of the same uid may ptrace it or read its
//!    memory;
//! 6. an unprivileged uid and gid, no supplementary groups (all capabilities go with uid 0);
//! 7. `no_new_privs`, then the seccomp filter (which kills the process on anything else).
//!
//! The PID, network and IPC namespaces come from the zygote, which creates the process in
//! them ([`crate::zygote`]).

use std::os::fd::RawFd;
use std::path::Path;

use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{
    chdir, chroot, pivot_root, setgroups, sethostname, setresgid, setresuid, Gid, Uid,
};
use serde::{Deserialize, Serialize};

use crate::cgroup::{CgroupError, Cgroups, Limits};
use crate::seccomp::{self, Filter};

/// Where and as whom VM processes run: the same for all of a worker's VMs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailConfig {
    /// An empty directory: each VM process mounts its own new root on it, in its own mount
    /// namespace (the host sees nothing there).
    pub root: std::path::PathBuf,
    pub uid: u32,
    pub gid: u32,
    pub cgroups: Cgroups,
    /// Most file descriptors a VM process may hold.
    pub max_fds: u64,
}

impl JailConfig {
    /// Most file descriptors a VM process may hold, unless told otherwise: its channel,
    /// `/dev/kvm`, a VM and its vCPU, a few snapshot memfds, and room.
    pub const MAX_FDS: u64 = 256;

    /// VM processes under `root` as `uid`/`gid`, in this process's own cgroup (detected).
    pub fn detect(root: &Path, uid: u32, gid: u32) -> Result<JailConfig, CgroupError> {
        Ok(JailConfig {
            root: root.to_owned(),
            uid,
            gid,
            cgroups: Cgroups::detect()?,
            max_fds: JailConfig::MAX_FDS,
        })
    }
}

/// The host name every VM process has in its own UTS namespace, and its name (`comm`).
pub const HOST_NAME: &str = "ember-vm";

/// The process ids of every VM process on this host (by name, as `ps` shows them; a
/// zygote started as the `ember-vm` binary is named so too).
pub fn running() -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == HOST_NAME)
        })
        .collect()
}

/// Why the sandbox could not be entered (the process then exits without running guest
/// code).
#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error("{step}: {source}")]
    Step {
        step: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("seccomp: {0}")]
    Seccomp(#[from] seccomp::SeccompError),
}

fn step(step: &'static str) -> impl FnOnce(nix::Error) -> SandboxError {
    move |source| SandboxError::Step { step, source }
}

/// Confines the calling process (single-threaded, in fresh mount, UTS, network, IPC and
/// PID namespaces) as VM `name` with `limits`, keeping only the descriptors `keep`, and
/// finally installs the union of `filters`.
pub fn enter(
    config: &JailConfig,
    name: &str,
    limits: &Limits,
    keep: &[RawFd],
    filters: &[Filter],
) -> Result<(), SandboxError> {
    config.cgroups.join(name, limits)?;
    sethostname(HOST_NAME).map_err(step("sethostname"))?;
    // Whatever program forked it (`ember-vm`, `emberd`, `ember`), it shows as `ember-vm`.
    nix::sys::prctl::set_name(c"ember-vm").map_err(step("PR_SET_NAME"))?;
    new_root(&config.root)?;
    close_all_but(keep)?;
    limit(config.max_fds)?;
    drop_identity(config.uid, config.gid)?;
    seccomp::install(filters)?;
    Ok(())
}

/// Mounts a small read-only tmpfs on `root` and makes it `/`, detaching the old root.
fn new_root(root: &Path) -> Result<(), SandboxError> {
    let none: Option<&str> = None;
    // Nothing mounted or unmounted here may reach the host's mount namespace.
    mount(none, "/", none, MsFlags::MS_REC | MsFlags::MS_PRIVATE, none)
        .map_err(step("making mounts private"))?;
    let hidden = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount(
        Some("tmpfs"),
        root,
        Some("tmpfs"),
        hidden,
        Some("size=4k,nr_inodes=4,mode=0555"),
    )
    .map_err(step("mounting the new root"))?;
    chdir(root).map_err(step("entering the new root"))?;
    // pivot_root(".", "."): the old root ends up on top of the new one, then goes.
    match pivot_root(".", ".") {
        Ok(()) => umount2(".", MntFlags::MNT_DETACH).map_err(step("detaching the old root"))?,
        // The old root is an initramfs (the worker image), which cannot be pivoted away:
        // move the new root over it and chroot, as switch_root does. Without capabilities
        // (dropped below) and without chroot (seccomp), there is no way back out.
        Err(nix::Error::EINVAL) => {
            mount(Some("."), "/", none, MsFlags::MS_MOVE, none)
                .map_err(step("moving the new root over the initramfs"))?;
            chroot(".").map_err(step("chroot"))?;
        }
        Err(e) => return Err(step("pivot_root")(e)),
    }
    chdir("/").map_err(step("chdir /"))?;
    mount(
        none,
        "/",
        none,
        MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY | hidden,
        none,
    )
    .map_err(step("making the new root read-only"))?;
    Ok(())
}

/// Closes every descriptor but `keep` (and stdin, stdout and stderr, which the zygote
/// points at `/dev/null` and its own log).
fn close_all_but(keep: &[RawFd]) -> Result<(), SandboxError> {
    let mut keep: Vec<RawFd> = keep.iter().copied().filter(|fd| *fd > 2).collect();
    keep.sort_unstable();
    let mut from = 3;
    for fd in keep.into_iter().chain([RawFd::MAX]) {
        if fd > from {
            close_range(from, fd - 1)?;
        }
        from = fd.saturating_add(1);
    }
    Ok(())
}

fn close_range(first: RawFd, last: RawFd) -> Result<(), SandboxError> {
    // SAFETY: close_range only closes descriptors; none in the range is used afterwards
    // (the caller keeps the ones it needs outside every range).
    let rc = unsafe { libc::syscall(libc::SYS_close_range, first as u32, last as u32, 0u32) };
    if rc != 0 {
        return Err(step("close_range")(nix::Error::last()));
    }
    Ok(())
}

/// No core dumps, at most `max_fds` descriptors; not dumpable.
fn limit(max_fds: u64) -> Result<(), SandboxError> {
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(step("RLIMIT_CORE"))?;
    setrlimit(Resource::RLIMIT_NOFILE, max_fds, max_fds).map_err(step("RLIMIT_NOFILE"))?;
    // SAFETY: PR_SET_DUMPABLE takes an integer and changes only this process's flag.
    if unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0) } != 0 {
        return Err(step("PR_SET_DUMPABLE")(nix::Error::last()));
    }
    Ok(())
}

/// Becomes `uid`:`gid` with no supplementary groups; from uid 0 this drops every
/// capability.
fn drop_identity(uid: u32, gid: u32) -> Result<(), SandboxError> {
    setgroups(&[]).map_err(step("setgroups"))?;
    let (uid, gid) = (Uid::from_raw(uid), Gid::from_raw(gid));
    setresgid(gid, gid, gid).map_err(step("setresgid"))?;
    setresuid(uid, uid, uid).map_err(step("setresuid"))?;
    Ok(())
}
