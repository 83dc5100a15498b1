//! VM processes from the real `ember-vm` zygote: each one is sandboxed before it serves
//! (seccomp mode 2, `no_new_privs`, its own mount, network, PID, IPC and UTS namespaces,
//! an unprivileged uid, a cgroup with a memory limit), and a process that tries what a
//! guest that took over its VMM would try is killed, while its siblings and the worker
//! carry on. Needs root (as emberd does); fails loudly without it.

use std::path::Path;
use std::time::Duration;

use ember_jail::{JailConfig, Limits, VmProcess, Zygote};
use ember_vmm::process::{Probe, Reply, Request};

const UID: u32 = 65534;

fn zygote(root: &Path) -> (Zygote, JailConfig) {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the isolation tests need root, as emberd's jail does"
    );
    let config = JailConfig::detect(root, UID, UID).expect("a usable cgroup hierarchy");
    let program = Path::new(env!("CARGO_BIN_EXE_ember-vm"));
    let zygote = Zygote::start(program, &config, &["--test-probes"]).unwrap();
    (zygote, config)
}

fn limits() -> Limits {
    Limits {
        memory_bytes: 256 << 20,
        pids: 16,
        memory_mib: 128,
    }
}

fn ask(vm: &VmProcess, request: &Request) -> Option<Reply> {
    vm.channel.send(request, &[]).ok()?;
    vm.channel.recv::<Reply>().ok().map(|(reply, _)| reply)
}

/// `field:` of /proc/PID/status, trimmed.
fn status(pid: u32, field: &str) -> String {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
        .trim()
        .to_owned()
}

fn namespace(pid: &str, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn every_vm_process_is_sandboxed_before_it_serves() {
    let root = tempfile::tempdir().unwrap();
    let (zygote, config) = zygote(root.path());
    let a = zygote.spawn("vm-a", &limits()).unwrap();
    let b = zygote.spawn("vm-b", &limits()).unwrap();
    for vm in [&a, &b] {
        assert!(matches!(ask(vm, &Request::Ping), Some(Reply::Pong)));
        let pid = vm.pid;
        assert_eq!(
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .unwrap()
                .trim(),
            "ember-vm"
        );
        assert_eq!(status(pid, "Seccomp"), "2", "seccomp filter mode");
        assert_eq!(status(pid, "NoNewPrivs"), "1");
        assert!(status(pid, "Uid").starts_with(&format!("{UID}\t{UID}\t{UID}")));
        assert_eq!(status(pid, "CapEff"), "0000000000000000");
        for kind in ["mnt", "net", "pid_for_children", "ipc", "uts"] {
            assert_ne!(
                namespace(&pid.to_string(), kind),
                namespace("self", kind),
                "{kind} namespace shared with the worker"
            );
        }
        let limit = std::fs::read_to_string(config.cgroups.memory_limit_file(&vm.name)).unwrap();
        assert_eq!(limit.trim(), (256u64 << 20).to_string());
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(
            cgroup
                .lines()
                .any(|line| line.contains("memory") || line.starts_with("0::"))
                && cgroup.contains(&format!("ember-vm/{}", vm.name)),
            "{cgroup}"
        );
        // Its root is an empty read-only tmpfs: nothing of the host is there.
        let entries = std::fs::read_dir(format!("/proc/{pid}/root"))
            .unwrap()
            .count();
        assert_eq!(entries, 0, "the VM process's root is not empty");
    }
    assert_ne!(
        namespace(&a.pid.to_string(), "net"),
        namespace(&b.pid.to_string(), "net"),
        "two VM processes share a network namespace"
    );
    assert!(
        std::fs::read_dir(root.path()).unwrap().next().is_none(),
        "the new roots leaked into the host's mount namespace"
    );

    // Dropping its handle ends a VM process, and its cgroup goes with it.
    let (pid, name) = (a.pid, a.name.clone());
    drop(a);
    let exit = zygote.wait_exit(pid, Duration::from_secs(10));
    assert_eq!(exit.as_deref(), Some("killed by SIGKILL"));
    assert!(!config.cgroups.memory_limit_file(&name).exists());
    assert!(matches!(ask(&b, &Request::Ping), Some(Reply::Pong)));
}

#[test]
fn a_vm_process_that_tries_a_forbidden_operation_is_killed_and_only_it() {
    let root = tempfile::tempdir().unwrap();
    let (zygote, _config) = zygote(root.path());
    let bystander = zygote.spawn("bystander", &limits()).unwrap();
    let worker_pid = std::process::id();
    let probes = [
        Probe::TcpSocket,
        Probe::Exec("/bin/sh".into()),
        Probe::Ptrace(worker_pid),
    ];
    for (i, probe) in probes.iter().enumerate() {
        let vm = zygote.spawn(&format!("probe-{i}"), &limits()).unwrap();
        let reply = ask(&vm, &Request::Probe(probe.clone()));
        assert!(reply.is_none(), "{probe:?} was answered: {reply:?}");
        let exit = zygote.wait_exit(vm.pid, Duration::from_secs(10));
        assert_eq!(exit.as_deref(), Some("killed by SIGSYS"), "{probe:?}");
        assert!(
            matches!(ask(&bystander, &Request::Ping), Some(Reply::Pong)),
            "{probe:?}"
        );
    }
    // Opening a file is refused rather than fatal (the C library's allocator tries to read
    // /proc once), and there is nothing to open: the root is empty.
    let vm = zygote.spawn("probe-open", &limits()).unwrap();
    let reply = ask(&vm, &Request::Probe(Probe::OpenFile("/etc/passwd".into())));
    assert!(
        matches!(&reply, Some(Reply::Probed(how)) if how.starts_with("refused")),
        "{reply:?}"
    );
    // The worker was never traced.
    assert_eq!(status(worker_pid, "TracerPid"), "0");
}

#[test]
fn probes_are_refused_outside_the_tests() {
    let root = tempfile::tempdir().unwrap();
    let config = JailConfig::detect(root.path(), UID, UID).expect("a usable cgroup hierarchy");
    let program = Path::new(env!("CARGO_BIN_EXE_ember-vm"));
    let zygote = Zygote::start(program, &config, &[]).unwrap();
    let vm = zygote.spawn("plain", &limits()).unwrap();
    let reply = ask(&vm, &Request::Probe(Probe::TcpSocket));
    assert!(matches!(reply, Some(Reply::Refused(_))), "{reply:?}");
}
