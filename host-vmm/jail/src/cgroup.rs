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
                // The worker's own cgroup must delegate the controllers to `ember-vm`.
                write(&own_dir.join("cgroup.subtree_control"), CONTROLLERS)?;
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
}
