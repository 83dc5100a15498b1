//! One cgroup per micro-VM process, on either cgroup version, as the host has it: v2 when
//! the unified hierarchy offers the memory controller, else v1's memory, pids and cpu
//! hierarchies (hosts with a hybrid layout keep memory on v1). Every VM's cgroup lies
//! under `ember-vm/` in the cgroup the worker itself runs in, so an operator's limits on
//! the worker bound its VMs too.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What one VM process may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory (guest memory and the VMM's own), bytes.
    pub memory_bytes: u64,
    /// Processes and threads.
    pub pids: u64,
    /// The function's memory size (MiB): its CPU share is proportional to it, as Lambda
    /// gives one vCPU's worth at 1,769 MB.
    pub memory_mib: u64,
}

/// The memory size (MiB) that Lambda gives a whole vCPU.
const MIB_PER_VCPU: u64 = 1769;

/// Why a VM's cgroup could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("no usable cgroup hierarchy: neither cgroup v2 with the memory controller nor cgroup v1's memory, pids and cpu controllers are mounted under /sys/fs/cgroup")]
    NoHierarchy,
    #[error("other processes share this worker's cgroup {0}, and cgroup v2 delegates controllers only from a cgroup without processes: run the worker in a cgroup of its own (with systemd, a unit with Delegate=yes)")]
    Shared(PathBuf),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// The hierarchies VM cgroups are made in: the directory `ember-vm` inside the worker's own
/// cgroup of each.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cgroups {
    V2 {
        base: PathBuf,
    },
    V1 {
        memory: PathBuf,
        pids: PathBuf,
        cpu: PathBuf,
    },
}

const MOUNT: &str = "/sys/fs/cgroup";
const CONTROLLERS: &str = "+memory +pids +cpu";

impl Cgroups {
    /// Finds the hierarchies on this host and prepares `ember-vm` in each (for v2, with the
    /// controllers delegated to it).
    pub fn detect() -> Result<Cgroups, CgroupError> {
        let own = read(Path::new("/proc/self/cgroup"))?;
        let cgroups = match v2_mount() {
            Some(mount) => {
                let path = own_path(&own, |controllers| controllers.is_empty())
                    .ok_or(CgroupError::NoHierarchy)?;
                let own_dir = mount.join(path.trim_start_matches('/'));
                delegate(&own_dir, CONTROLLERS, "0")?;
                let base = own_dir.join("ember-vm");
                make_dir(&base)?;
                write(&base.join("cgroup.subtree_control"), CONTROLLERS)?;
                Cgroups::V2 { base }
            }
            None => {
                let v1 = |controller: &str| -> Option<PathBuf> {
                    let path = own_path(&own, |c| c.split(',').any(|c| c == controller))?;
                    let dir = Path::new(MOUNT).join(controller);
                    dir.join("cgroup.procs")
                        .exists()
                        .then(|| dir.join(path.trim_start_matches('/')).join("ember-vm"))
                };
                let (Some(memory), Some(pids), Some(cpu)) = (v1("memory"), v1("pids"), v1("cpu"))
                else {
                    return Err(CgroupError::NoHierarchy);
                };
                for dir in [&memory, &pids, &cpu] {
                    make_dir(dir)?;
                }
                Cgroups::V1 { memory, pids, cpu }
            }
        };
        Ok(cgroups)
    }

    /// Creates VM `name`'s cgroup with `limits`, and moves the calling process into it.
    pub fn join(&self, name: &str, limits: &Limits) -> Result<(), CgroupError> {
        let cpu_share =
            |default: u64, max: u64| (limits.memory_mib * default / MIB_PER_VCPU).clamp(2, max);
        match self {
            Cgroups::V2 { base } => {
                let dir = base.join(name);
                make_dir(&dir)?;
                write(&dir.join("memory.max"), &limits.memory_bytes.to_string())?;
                write(&dir.join("memory.swap.max"), "0").or_else(absent_is_fine)?;
                write(&dir.join("pids.max"), &limits.pids.to_string())?;
                write(&dir.join("cpu.weight"), &cpu_share(100, 10_000).to_string())?;
                write(&dir.join("cgroup.procs"), "0")
            }
            Cgroups::V1 { memory, pids, cpu } => {
                let (memory, pids, cpu) = (memory.join(name), pids.join(name), cpu.join(name));
                for dir in [&memory, &pids, &cpu] {
                    make_dir(dir)?;
                }
                let bytes = limits.memory_bytes.to_string();
                write(&memory.join("memory.limit_in_bytes"), &bytes)?;
                write(&memory.join("memory.memsw.limit_in_bytes"), &bytes)
                    .or_else(absent_is_fine)?;
                write(&pids.join("pids.max"), &limits.pids.to_string())?;
                write(
                    &cpu.join("cpu.shares"),
                    &cpu_share(1024, 262_144).to_string(),
                )?;
                for dir in [&memory, &pids, &cpu] {
                    write(&dir.join("cgroup.procs"), "0")?;
                }
                Ok(())
            }
        }
    }

    /// Removes VM `name`'s cgroup once its process has ended.
    pub fn remove(&self, name: &str) {
        let dirs = match self {
            Cgroups::V2 { base } => vec![base.join(name)],
            Cgroups::V1 { memory, pids, cpu } => {
                vec![memory.join(name), pids.join(name), cpu.join(name)]
            }
        };
        for dir in dirs {
            if let Err(e) = fs::remove_dir(&dir) {
                if e.kind() != io::ErrorKind::NotFound {
                    log::warn!("removing {}: {e}", dir.display());
                }
            }
        }
    }

    /// The memory limit file of VM `name`'s cgroup.
    pub fn memory_limit_file(&self, name: &str) -> PathBuf {
        match self {
            Cgroups::V2 { base } => base.join(name).join("memory.max"),
            Cgroups::V1 { memory, .. } => memory.join(name).join("memory.limit_in_bytes"),
        }
    }
}

/// Has the v2 cgroup `dir` (the worker's own) delegate `controllers` to its children.
/// Cgroup v2 refuses while `dir` holds processes (the root cgroup excepted), so then
/// `process` (`"0"`: the caller) moves into a leaf `worker/` of it first, as systemd's
/// delegation rules ask; if others still hold it, the error says so.
fn delegate(dir: &Path, controllers: &str, process: &str) -> Result<(), CgroupError> {
    let control = dir.join("cgroup.subtree_control");
    let busy = |e: &CgroupError| matches!(e, CgroupError::Io { source, .. } if source.raw_os_error() == Some(libc::EBUSY));
    match write(&control, controllers) {
        Err(e) if busy(&e) => {
            let leaf = dir.join("worker");
            make_dir(&leaf)?;
            write(&leaf.join("cgroup.procs"), process)?;
            write(&control, controllers).map_err(|e| {
                if busy(&e) {
                    CgroupError::Shared(dir.to_owned())
                } else {
                    e
                }
            })
        }
        result => result,
    }
}

/// The cgroup2 mount, when it offers the memory controller.
fn v2_mount() -> Option<PathBuf> {
    [Path::new(MOUNT), &Path::new(MOUNT).join("unified")]
        .into_iter()
        .find(|dir| {
            fs::read_to_string(dir.join("cgroup.controllers"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "memory"))
        })
        .map(Path::to_path_buf)
}

/// This process's path in the hierarchy whose controller list `matches`, from
/// `/proc/self/cgroup` (`ID:CONTROLLERS:PATH` lines).
fn own_path(proc_cgroup: &str, matches: impl Fn(&str) -> bool) -> Option<String> {
    proc_cgroup.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        matches(controllers).then(|| path.to_owned())
    })
}

/// Optional knobs (swap limits) are missing when the kernel accounts no swap.
fn absent_is_fine(e: CgroupError) -> Result<(), CgroupError> {
    match e {
        CgroupError::Io { ref source, .. } if source.kind() == io::ErrorKind::NotFound => Ok(()),
        e => Err(e),
    }
}

fn read(path: &Path) -> Result<String, CgroupError> {
    fs::read_to_string(path).map_err(|source| CgroupError::Io {
        path: path.to_owned(),
        source,
    })
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Io {
        path: path.to_owned(),
        source,
    })
}

fn make_dir(path: &Path) -> Result<(), CgroupError> {
    match fs::create_dir(path) {
        Err(e) if e.kind() != io::ErrorKind::AlreadyExists => Err(CgroupError::Io {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_its_own_path_per_hierarchy() {
        let text = "9:name=systemd:/\n4:memory:/process_api/abc\n1:cpu,cpuacct:/x\n0::/y\n";
        assert_eq!(
            own_path(text, |c| c.split(',').any(|c| c == "memory")).as_deref(),
            Some("/process_api/abc")
        );
        assert_eq!(
            own_path(text, |c| c.split(',').any(|c| c == "cpu")).as_deref(),
            Some("/x")
        );
        assert_eq!(own_path(text, str::is_empty).as_deref(), Some("/y"));
        assert_eq!(own_path(text, |c| c == "pids"), None);
    }

    /// A cgroup2 mount and a controller it offers (this host's hybrid layout keeps only
    /// `hugetlb` on v2; any will do to show the delegation rules).
    fn v2_with_a_controller() -> (PathBuf, String) {
        let mounts = fs::read_to_string("/proc/mounts").unwrap();
        mounts
            .lines()
            .filter_map(|line| {
                let mut fields = line.split_whitespace();
                let (dir, kind) = (fields.nth(1)?, fields.next()?);
                (kind == "cgroup2").then(|| PathBuf::from(dir))
            })
            .find_map(|dir| {
                let controllers = fs::read_to_string(dir.join("cgroup.controllers")).ok()?;
                let first = controllers.split_whitespace().next()?.to_owned();
                Some((dir, first))
            })
            .expect("a cgroup2 mount with a controller (root required, as the jail's)")
    }

    struct Sleeper(std::process::Child);

    impl Sleeper {
        fn into(dir: &Path) -> Sleeper {
            let child = std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap();
            fs::write(dir.join("cgroup.procs"), child.id().to_string()).unwrap();
            Sleeper(child)
        }
    }

    impl Drop for Sleeper {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    #[test]
    fn a_worker_sharing_its_v2_cgroup_moves_into_a_leaf_or_says_why_not() {
        let (mount, controller) = v2_with_a_controller();
        let enable = format!("+{controller}");
        // Offered to the test's cgroup only if the root delegates it (restored after).
        let root_control = mount.join("cgroup.subtree_control");
        let root_had = fs::read_to_string(&root_control)
            .unwrap()
            .split_whitespace()
            .any(|c| c == controller);
        fs::write(&root_control, &enable).unwrap();
        let dir = mount.join(format!("ember-jail-test-{}", std::process::id()));
        make_dir(&dir).unwrap();
        {
            let worker = Sleeper::into(&dir);
            delegate(&dir, &enable, &worker.0.id().to_string()).unwrap();
            let enabled = fs::read_to_string(dir.join("cgroup.subtree_control")).unwrap();
            assert!(enabled.contains(&controller), "{enabled}");
            let leaf = fs::read_to_string(dir.join("worker/cgroup.procs")).unwrap();
            assert_eq!(leaf.trim(), worker.0.id().to_string());
            fs::write(dir.join("cgroup.subtree_control"), format!("-{controller}")).unwrap();

            // With another process beside it in the cgroup, moving itself is not enough.
            fs::write(dir.join("cgroup.procs"), worker.0.id().to_string()).unwrap();
            let other = Sleeper::into(&dir);
            let err = delegate(&dir, &enable, &worker.0.id().to_string()).unwrap_err();
            assert!(matches!(err, CgroupError::Shared(_)), "{err}");
            assert!(err.to_string().contains("Delegate=yes"), "{err}");
            drop(other);
        }
        // The processes have ended: the cgroups can go.
        let _ = fs::remove_dir(dir.join("worker"));
        fs::remove_dir(&dir).unwrap();
        if !root_had {
            fs::write(&root_control, format!("-{controller}")).unwrap();
        }
    }
}
