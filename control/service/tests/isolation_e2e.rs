//! One sandboxed process per micro-VM, seen from outside a real `emberd serve` (as root,
//! KVM required): after invocations through control, every `ember-vm` process under the
//! worker has seccomp mode 2, `no_new_privs`, mount and network namespaces unlike the
//! worker's, a cgroup with a memory limit and an unprivileged uid; the worker itself holds
//! no guest memory and runs no vCPU thread.

use std::path::Path;

use ember_testkit::worker::Worker;
use ember_testkit::{zip, Control};

/// `field:` of /proc/PID/status.
fn status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_default()
        .trim()
        .to_owned()
}

fn parent(pid: u32) -> Option<u32> {
    status(pid, "PPid").parse().ok()
}

/// Processes whose ancestors include `root`.
fn descendants(root: u32) -> Vec<u32> {
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let mut at = *pid;
            while let Some(up) = parent(at).filter(|up| *up > 1) {
                if up == root {
                    return true;
                }
                at = up;
            }
            false
        })
        .collect()
}

fn namespace(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|link| link.display().to_string())
        .unwrap_or_default()
}

/// The memory limit of `pid`'s cgroup, v1 or v2, in bytes.
fn memory_limit(pid: u32) -> Option<u64> {
    let cgroups = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    cgroups.lines().find_map(|line| {
        let mut fields = line.splitn(3, ':');
        let (_, controllers, path) = (fields.next()?, fields.next()?, fields.next()?);
        let path = path.trim_start_matches('/');
        let file = if controllers.split(',').any(|c| c == "memory") {
            Path::new("/sys/fs/cgroup/memory")
                .join(path)
                .join("memory.limit_in_bytes")
        } else if controllers.is_empty() {
            Path::new("/sys/fs/cgroup").join(path).join("memory.max")
        } else {
            return None;
        };
        std::fs::read_to_string(file).ok()?.trim().parse().ok()
    })
}

#[test]
fn every_micro_vm_of_a_worker_runs_in_its_own_sandboxed_process() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(&dir.path().join("data"));
    let worker = Worker::start(&control, &dir.path().join("worker"));
    for (name, module) in [
        ("hello", ember_examples::HELLO),
        ("echo", ember_examples::ECHO_REACTOR),
    ] {
        let package = dir.path().join(format!("{name}.zip"));
        std::fs::write(&package, zip(&[(&format!("{name}.wasm"), module)])).unwrap();
        control.create_function(name, &package, &[]);
        let out = dir.path().join("out.json");
        control.aws_json(&["invoke", "--function-name", name, out.to_str().unwrap()]);
    }

    let worker_pid = worker.pid();
    let vms: Vec<u32> = descendants(worker_pid)
        .into_iter()
        .filter(|pid| status(*pid, "Name") == "ember-vm")
        .collect();
    assert!(
        vms.len() >= 2,
        "two environments, but {} ember-vm processes under the worker",
        vms.len()
    );
    for pid in vms {
        assert_eq!(status(pid, "Seccomp"), "2", "VM process {pid}");
        assert_eq!(status(pid, "NoNewPrivs"), "1", "VM process {pid}");
        assert!(status(pid, "Uid").starts_with("65534"), "VM process {pid}");
        for kind in ["mnt", "net", "pid_for_children"] {
            assert_ne!(
                namespace(pid, kind),
                namespace(worker_pid, kind),
                "VM process {pid} shares the worker's {kind} namespace"
            );
        }
        let limit = memory_limit(pid).expect("a memory cgroup");
        assert!(
            limit < 1 << 40,
            "VM process {pid}: no memory limit ({limit})"
        );
    }

    // The worker maps no guest memory and runs no vCPU.
    let maps = std::fs::read_to_string(format!("/proc/{worker_pid}/maps")).unwrap();
    assert!(
        !maps.contains("ember-guest"),
        "the worker maps guest memory"
    );
    let threads = std::fs::read_dir(format!("/proc/{worker_pid}/task")).unwrap();
    for thread in threads {
        let comm = std::fs::read_to_string(thread.unwrap().path().join("comm")).unwrap();
        assert!(!comm.starts_with("vcpu-"), "the worker runs a vCPU: {comm}");
    }
}
