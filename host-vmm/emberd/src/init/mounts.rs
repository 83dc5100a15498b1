//! The file systems a worker needs: `/proc`, `/sys`, `/dev` (devtmpfs, so device nodes
//! such as `/dev/kvm` appear by themselves), `/dev/pts`, `/run` (tmpfs: the token file
//! and the state directory) and `/sys/fs/cgroup` (cgroup2, for the sandboxed VMM
//! processes to come). A mount point that is mounted already is left as it is, so
//! `emberd init` outside an initramfs does not stack mounts.

use std::path::Path;

use nix::mount::{mount, MsFlags};

/// One mount: what, where, which file system, flags, options.
struct Mount {
    source: &'static str,
    target: &'static str,
    fstype: &'static str,
    flags: MsFlags,
    data: &'static str,
}

/// In order: each target lives on a file system mounted before it.
fn mounts() -> [Mount; 6] {
    let hardened = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    [
        Mount {
            source: "proc",
            target: "/proc",
            fstype: "proc",
            flags: hardened,
            data: "",
        },
        Mount {
            source: "sysfs",
            target: "/sys",
            fstype: "sysfs",
            flags: hardened,
            data: "",
        },
        Mount {
            source: "devtmpfs",
            target: "/dev",
            fstype: "devtmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: "mode=0755",
        },
        Mount {
            source: "devpts",
            target: "/dev/pts",
            fstype: "devpts",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            data: "mode=0620,ptmxmode=0666",
        },
        Mount {
            source: "tmpfs",
            target: "/run",
            fstype: "tmpfs",
            flags: MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            data: "mode=0755",
        },
        Mount {
            source: "cgroup2",
            target: "/sys/fs/cgroup",
            fstype: "cgroup2",
            flags: hardened,
            data: "",
        },
    ]
}

/// Mounts each file system not mounted yet; one log line per mount. A failure is
/// fatal: without these nothing else works.
pub fn mount_all() -> Result<(), String> {
    for m in mounts() {
        if is_mount_point(m.target) {
            log::info!("mount: {} already mounted", m.target);
            continue;
        }
        std::fs::create_dir_all(m.target)
            .map_err(|e| format!("creating mount point {}: {e}", m.target))?;
        mount(
            Some(m.source),
            m.target,
            Some(m.fstype),
            m.flags,
            Some(m.data),
        )
        .map_err(|errno| format!("mounting {} on {}: {errno}", m.fstype, m.target))?;
        log::info!("mount: {} on {}", m.fstype, m.target);
    }
    Ok(())
}

/// Whether `target` is mounted: per `/proc/self/mountinfo` once `/proc` is, and for
/// `/proc` itself whether it has contents.
fn is_mount_point(target: &str) -> bool {
    match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(mountinfo) => mountinfo
            .lines()
            .filter_map(|line| line.split(' ').nth(4))
            .any(|point| point == target),
        Err(_) => target == "/proc" && Path::new("/proc/self").exists(),
    }
}
