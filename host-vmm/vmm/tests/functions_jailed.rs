//! The pool with a jail: every VM (templates, init phases, spares, environments) runs in a
//! sandboxed `ember-vm` process of its own, and functions behave as they do in-process:
//! state, per-invocation resets, spares, logs, timeouts, init errors and a guest that
//! breaks its VMM's rules costing only its own process. Needs root and KVM.

mod function_support;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use ember_jail::{JailConfig, Zygote};
use ember_vmm::function::{Failure, Isolation, Pool, PoolConfig, SpecBuilder};
use ember_vmm::process::Jail;
use function_support::{build, count, invoke_err, invoke_ok, lossy, pool_with, spec, wait_for};

fn jail(root: &Path, test_frames: bool) -> Arc<Jail> {
    assert!(
        nix::unistd::geteuid().is_root(),
        "jailed VMs need root, as emberd's jail does"
    );
    let config = JailConfig::detect(root, 65534, 65534).expect("a usable cgroup hierarchy");
    let program = Path::new(env!("CARGO_BIN_EXE_ember-vm"));
    let args: &[&str] = if test_frames { &["--test-probes"] } else { &[] };
    Arc::new(Jail::new(Zygote::start(program, &config, args).unwrap()))
}

fn jailed_pool(root: &Path, config: PoolConfig) -> Pool {
    let test_frames = config.test_frames;
    pool_with(PoolConfig {
        jail: Some(jail(root, test_frames)),
        ..config
    })
    .0
}

/// Processes named `ember-vm` running under seccomp (VM processes, not the zygote).
fn sandboxed_vm_processes() -> usize {
    ember_jail::sandbox::running()
        .into_iter()
        .filter(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            status.contains("Seccomp:\t2")
        })
        .count()
}

/// Whether some `ember-vm` process has a thread named `prefix…` with more seccomp filters
/// than the process's main thread, and none has one with fewer.
fn threads_confined(prefix: &str) -> bool {
    let filters = |path: &str| -> Option<u32> {
        std::fs::read_to_string(path)
            .ok()?
            .lines()
            .find_map(|line| line.strip_prefix("Seccomp_filters:"))?
            .trim()
            .parse()
            .ok()
    };
    let mut seen = false;
    for pid in ember_jail::sandbox::running() {
        let Some(main) = filters(&format!("/proc/{pid}/status")) else {
            continue;
        };
        let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
            continue;
        };
        for task in tasks.flatten() {
            let name = std::fs::read_to_string(task.path().join("comm")).unwrap_or_default();
            if name.starts_with(prefix) {
                match filters(&task.path().join("status").display().to_string()) {
                    Some(n) if n > main => seen = true,
                    Some(_) => return false,
                    None => {}
                }
            }
        }
    }
    seen
}

#[test]
fn functions_keep_state_reset_and_log_across_the_process_boundary() {
    let root = tempfile::tempdir().unwrap();
    let before = sandboxed_vm_processes();
    let pool = jailed_pool(root.path(), PoolConfig::default());
    let counter = |isolation| {
        build(
            SpecBuilder {
                name: "counter".into(),
                isolation,
                ..SpecBuilder::default()
            },
            ember_examples::COUNTER,
        )
    };
    let reused = counter(Isolation::Reuse);
    for n in 1..=3 {
        let inv = invoke_ok(&pool, &reused, b"");
        assert_eq!(count(&inv), n);
        assert_eq!(inv.cold, n == 1);
    }
    let isolated = counter(Isolation::PerInvocation);
    for i in 0..3 {
        let inv = invoke_ok(&pool, &isolated, b"");
        assert_eq!(count(&inv), 1, "isolated invocation {i}");
    }
    assert!(
        sandboxed_vm_processes() >= before + 2,
        "the environments do not run in sandboxed ember-vm processes"
    );
    for (thread, prefix) in [("vCPU", "vcpu-"), ("watchdog", "vm-watchdog")] {
        assert!(
            threads_confined(prefix),
            "no {thread} thread narrowed its filter beyond its process's"
        );
    }

    let hello = spec("hello", ember_examples::HELLO);
    let inv = invoke_ok(&pool, &hello, br#"{"name":"jail"}"#);
    assert!(
        lossy(&inv.output).contains("jail"),
        "{}",
        lossy(&inv.output)
    );
    assert!(!inv.log.is_empty(), "the function's log did not cross");
}

#[test]
fn spares_are_sandboxed_processes_too() {
    let root = tempfile::tempdir().unwrap();
    let pool = jailed_pool(
        root.path(),
        PoolConfig {
            spare_vms: 1,
            ..PoolConfig::default()
        },
    );
    invoke_ok(&pool, &spec("prime", ember_examples::ECHO_REACTOR), b"{}");
    assert!(
        wait_for(Duration::from_secs(30), || pool.spares(128) == 1).is_some(),
        "no spare was warmed"
    );
    let inv = invoke_ok(&pool, &spec("hello", ember_examples::HELLO), b"{}");
    assert!(
        inv.cold && inv.spare,
        "the cold start did not use the spare: {inv:?}"
    );
}

#[test]
fn timeouts_init_errors_and_hostile_guests_cost_only_their_process() {
    let root = tempfile::tempdir().unwrap();
    let pool = jailed_pool(
        root.path(),
        PoolConfig {
            test_frames: true,
            ..PoolConfig::default()
        },
    );
    let steady = spec("hello", ember_examples::HELLO);
    invoke_ok(&pool, &steady, b"{}");

    let spinning = build(
        SpecBuilder {
            name: "loop".into(),
            timeout: Duration::from_millis(500),
            ..SpecBuilder::default()
        },
        ember_examples::LOOP,
    );
    let (_, failure) = invoke_err(&pool, &spinning, b"");
    assert!(matches!(failure, Failure::Timeout(_)), "{failure:?}");

    let init_trap = spec("init-trap", ember_examples::INIT_TRAP);
    let (_, failure) = invoke_err(&pool, &init_trap, b"");
    assert!(matches!(failure, Failure::Init(_)), "{failure:?}");

    let hostile = build(
        SpecBuilder {
            name: "hostile".into(),
            env: vec![("EMBER_TEST_HOSTILE".into(), "bad-ring".into())],
            ..SpecBuilder::default()
        },
        ember_examples::ECHO_REACTOR,
    );
    let (_, failure) = invoke_err(&pool, &hostile, b"{}");
    assert!(matches!(failure, Failure::Crashed(_)), "{failure:?}");

    // The rest carry on.
    assert!(!invoke_ok(&pool, &steady, b"{}").cold);
}
