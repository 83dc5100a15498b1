//! Spare VMs (`PoolConfig::spare_vms`): an environment started in a spare behaves exactly
//! like one started in a new VM (state, isolation, separation, timeouts), a spare is never
//! handed to two environments, and a spare only takes snapshots of its own template.

mod function_support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::Duration;

use ember_vmm::function::{
    Environment, Failure, FunctionSpec, Invocation, Isolation, LogSink, Pool, PoolConfig,
    SpecBuilder,
};
use ember_vmm::vm::{Snapshot, SpareVm};
use ember_vmm::VmConfig;
use function_support::{
    build, count, invoke_err, invoke_ok, lossy, patterned, pool_with, spec, wait_for, Logs,
};

/// The memory size of `SpecBuilder::default()`.
const MIB: u32 = 128;

/// A pool keeping `spares` spare VMs, with the template of the default memory size made
/// (by one invocation of an unrelated function) and its spares warmed.
fn pool_with_spares(spares: usize) -> (Pool, Arc<Logs>) {
    let (pool, logs) = pool_with(PoolConfig {
        spare_vms: spares,
        ..PoolConfig::default()
    });
    invoke_ok(&pool, &spec("prime", ember_examples::ECHO_REACTOR), b"{}");
    assert!(
        wait_for(Duration::from_secs(20), || pool.spares(MIB) == spares).is_some(),
        "the pool did not warm {spares} spares (has {})",
        pool.spares(MIB)
    );
    (pool, logs)
}

/// Waits until the pool has warmed its spares again (so the next cold start takes one).
fn replenished(pool: &Pool, spares: usize) {
    assert!(
        wait_for(Duration::from_secs(20), || pool.spares(MIB) == spares).is_some(),
        "the pool did not replenish its spares"
    );
}

fn counter(name: &str, version: &str, account: &str) -> Arc<FunctionSpec> {
    build(
        SpecBuilder {
            account: account.into(),
            name: name.into(),
            version: version.into(),
            ..SpecBuilder::default()
        },
        ember_examples::COUNTER,
    )
}

/// What an invocation returned, without what differs between any two environments.
fn observable(inv: &Invocation) -> (Vec<u8>, Option<Failure>, bool) {
    (inv.output.clone(), inv.error.clone(), inv.cold)
}

/// The same sequence of invocations on a pool with spares and one without: identical
/// responses, and only the former's cold starts are in spares.
#[test]
fn environments_in_spares_behave_like_new_ones() {
    let run = |pool: &Pool, spares: usize| -> Vec<(Vec<u8>, Option<Failure>, bool)> {
        let a = counter("counter", "a", "acct-1");
        let b = counter("counter", "b", "acct-1");
        let other_account = counter("counter", "a", "acct-2");
        let hello = spec("hello", ember_examples::HELLO);
        let echo = spec("echo", ember_examples::ECHO_REACTOR);
        let mut seen = Vec::new();
        let mut environments = HashSet::new();
        let mut record = |inv: Invocation, expect_count: Option<u64>| {
            if let Some(n) = expect_count {
                assert_eq!(count(&inv), n, "{}", lossy(&inv.output));
            }
            assert_eq!(inv.spare, inv.cold && spares > 0, "cold {}", inv.cold);
            if inv.cold {
                assert!(
                    environments.insert(inv.environment),
                    "an environment was reused"
                );
            }
            seen.push(observable(&inv));
        };
        for (spec, n) in [(&a, 1), (&a, 2), (&b, 1), (&other_account, 1), (&a, 3)] {
            if spares > 0 {
                replenished(pool, spares);
            }
            record(invoke_ok(pool, spec, b""), Some(n));
            // Let the trim after a first invocation happen before the next one.
            std::thread::sleep(Duration::from_millis(50));
        }
        if spares > 0 {
            replenished(pool, spares);
        }
        record(invoke_ok(pool, &hello, br#"{"name":"Ada"}"#), None);
        if spares > 0 {
            replenished(pool, spares);
        }
        record(invoke_ok(pool, &echo, b"{}"), None);
        // After the trim, the environment's given-back pages fault in again as needed.
        std::thread::sleep(Duration::from_millis(50));
        let big = patterned(1 << 20, 7);
        let inv = invoke_ok(pool, &echo, &big);
        assert!(inv.output == big, "a 1 MiB echo came back different");
        record(inv, None);
        seen
    };
    let (with_spares, _logs) = pool_with_spares(2);
    let (without, _logs) = pool_with(PoolConfig {
        spare_vms: 0,
        ..PoolConfig::default()
    });
    invoke_ok(
        &without,
        &spec("prime", ember_examples::ECHO_REACTOR),
        b"{}",
    );
    assert_eq!(without.spares(MIB), 0);
    assert_eq!(run(&with_spares, 2), run(&without, 0));
}

#[test]
fn per_invocation_isolation_resets_an_environment_from_a_spare() {
    let (pool, _logs) = pool_with_spares(1);
    let isolated = build(
        SpecBuilder {
            name: "isolated".into(),
            isolation: Isolation::PerInvocation,
            ..SpecBuilder::default()
        },
        ember_examples::COUNTER,
    );
    let first = invoke_ok(&pool, &isolated, b"");
    assert!(
        first.cold && first.spare,
        "the first start was not in a spare"
    );
    assert_eq!(count(&first), 1);
    for n in 2..=5 {
        std::thread::sleep(Duration::from_millis(20));
        let inv = invoke_ok(&pool, &isolated, b"");
        assert_eq!(count(&inv), 1, "invocation {n} saw state of an earlier one");
        assert_eq!(inv.environment, first.environment, "invocation {n}");
    }
}

#[test]
fn a_timed_out_environment_from_a_spare_is_discarded() {
    let (pool, _logs) = pool_with_spares(2);
    let looping = build(
        SpecBuilder {
            name: "loop".into(),
            timeout: Duration::from_secs(1),
            ..SpecBuilder::default()
        },
        ember_examples::LOOP,
    );
    let (first, failure) = invoke_err(&pool, &looping, b"");
    assert!(first.spare, "the looping function did not start in a spare");
    assert_eq!(failure, Failure::Timeout(Duration::from_secs(1)));
    assert_eq!(
        pool.stats(looping.key()).idle,
        0,
        "the timed-out environment was kept"
    );

    replenished(&pool, 2);
    let (second, failure) = invoke_err(&pool, &looping, b"");
    assert!(matches!(failure, Failure::Timeout(_)), "{failure:?}");
    assert!(second.spare && second.environment != first.environment);
    // The pool carries on, in spares too.
    replenished(&pool, 2);
    let inv = invoke_ok(&pool, &counter("after", "1", "acct"), b"");
    assert!(inv.spare);
    assert_eq!(count(&inv), 1);
}

/// Many versions start at once while only two spares are kept: each environment is its
/// own VM with its own state, whether it got a spare or not.
#[test]
fn a_spare_is_never_handed_to_two_environments() {
    const VERSIONS: usize = 8;
    let (pool, _logs) = pool_with_spares(2);
    let specs: Vec<_> = (0..VERSIONS)
        .map(|v| counter("many", &v.to_string(), "acct"))
        .collect();
    let barrier = Barrier::new(VERSIONS);
    let firsts: Vec<Invocation> = std::thread::scope(|s| {
        let running: Vec<_> = specs
            .iter()
            .map(|spec| {
                let (pool, barrier) = (&pool, &barrier);
                s.spawn(move || {
                    barrier.wait();
                    invoke_ok(pool, spec, b"")
                })
            })
            .collect();
        running.into_iter().map(|r| r.join().unwrap()).collect()
    });
    let environments: HashSet<u64> = firsts.iter().map(|inv| inv.environment).collect();
    assert_eq!(
        environments.len(),
        VERSIONS,
        "two versions shared an environment"
    );
    assert!(firsts.iter().all(|inv| inv.cold && count(inv) == 1));
    assert!(
        firsts.iter().any(|inv| inv.spare),
        "no cold start used a spare"
    );
    assert!(pool.spares(MIB) <= 2, "more spares than configured");
    for (spec, first) in specs.iter().zip(&firsts) {
        let inv = invoke_ok(&pool, spec, b"");
        assert_eq!(count(&inv), 2, "version {}", spec.version);
        assert_eq!(
            inv.environment, first.environment,
            "version {}",
            spec.version
        );
    }
}

/// A spare only becomes a VM of a snapshot taken from its own template: applying one of
/// another template (here, another memory size) is refused, and the spare is gone.
#[test]
fn a_spare_refuses_a_snapshot_of_another_template() {
    function_support::require_kvm();
    let log: LogSink = Arc::new(|_: &FunctionSpec, _: &[u8]| {});
    let template = |mem_mib| {
        Snapshot::of_fresh_guest(&VmConfig {
            mem_mib,
            ..VmConfig::default()
        })
        .expect("booting a template")
    };
    let (small, large) = (template(8), template(64));
    let spec = build(
        SpecBuilder {
            memory_mib: 64,
            ..SpecBuilder::default()
        },
        ember_examples::COUNTER,
    );
    let prepared = Environment::prepare(&spec, &large, &log).expect("preparing");

    // Warming more heap than there is warms all of it.
    let spare = SpareVm::new(&small, u64::MAX).expect("warming a spare");
    match Environment::from_spare(spec.clone(), prepared.clone(), spare) {
        Err(Failure::Crashed(error)) => assert!(
            error.to_string().contains("template"),
            "unexpected refusal: {error}"
        ),
        Err(other) => panic!("unexpected failure: {other:?}"),
        Ok(_) => panic!("a spare took a snapshot of another template"),
    }

    let spare = SpareVm::new(&large, 1 << 20).expect("warming a spare");
    let mut env = Environment::from_spare(spec, prepared, spare).expect("starting in a spare");
    let out = env.invoke(b"", &[], &log).expect("invoking");
    assert_eq!(lossy(&out.output), r#"{"count":1}"#);
}
