//! How the pool manages environments: state kept in one environment, per-invocation
//! isolation, provisioned environments, separation between versions, functions and accounts,
//! idle reaping and retirement by age.

mod function_support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use ember_vmm::function::{Failure, Isolation, PoolConfig, SpecBuilder};
use function_support::{
    build, count, invoke_err, invoke_ok, json, lossy, pool, pool_with, spec, wait_for, wasm,
};

fn counter(builder: SpecBuilder) -> Arc<ember_vmm::function::FunctionSpec> {
    build(builder, ember_examples::COUNTER)
}

#[test]
fn counter_keeps_state_within_one_environment() {
    let (pool, _logs) = pool();
    let v1 = counter(SpecBuilder {
        name: "counter".into(),
        version: "1".into(),
        ..SpecBuilder::default()
    });
    let mut environment = None;
    for n in 1..=3 {
        let inv = invoke_ok(&pool, &v1, b"");
        assert_eq!(count(&inv), n, "invocation {n}");
        assert_eq!(inv.cold, n == 1, "invocation {n}: cold = {}", inv.cold);
        assert_eq!(
            inv.init_duration.is_some(),
            n == 1,
            "invocation {n}: init_duration {:?}",
            inv.init_duration
        );
        assert_eq!(*environment.get_or_insert(inv.environment), inv.environment);
    }
    let environment = environment.unwrap();

    // Another version of the same function starts counting on its own environment...
    let v2 = counter(SpecBuilder {
        name: "counter".into(),
        version: "2".into(),
        ..SpecBuilder::default()
    });
    let inv = invoke_ok(&pool, &v2, b"");
    assert_eq!(count(&inv), 1, "version 2's first invocation");
    assert!(inv.cold && inv.environment != environment);
    // ...and version 1 carries on where it was.
    let inv = invoke_ok(&pool, &v1, b"");
    assert_eq!(count(&inv), 4);
    assert_eq!(inv.environment, environment);
}

#[test]
fn counter_restarts_after_its_environment_is_reaped() {
    let (pool, _logs) = pool_with(PoolConfig {
        idle_timeout: Duration::from_millis(200),
        reap_interval: Duration::from_millis(50),
        ..PoolConfig::default()
    });
    let spec = spec("counter", ember_examples::COUNTER);
    let first = invoke_ok(&pool, &spec, b"");
    let second = invoke_ok(&pool, &spec, b"");
    assert_eq!((count(&first), count(&second)), (1, 2));
    assert_eq!(first.environment, second.environment);
    assert!(
        wait_for(Duration::from_secs(2), || pool.total() == 0).is_some(),
        "the idle environment was not reaped: {:?}",
        pool.stats(spec.key())
    );
    let inv = invoke_ok(&pool, &spec, b"");
    assert_eq!(
        count(&inv),
        1,
        "the count did not restart in a new environment"
    );
    assert!(
        inv.cold && inv.environment != first.environment,
        "environment {} (cold = {}) after {} was reaped",
        inv.environment,
        inv.cold,
        first.environment
    );
}

#[test]
fn per_invocation_isolation_resets_state() {
    let (pool, _logs) = pool();
    let isolated = counter(SpecBuilder {
        name: "counter".into(),
        isolation: Isolation::PerInvocation,
        ..SpecBuilder::default()
    });
    let mut environments = HashSet::new();
    for i in 0..6 {
        let inv = invoke_ok(&pool, &isolated, b"");
        assert_eq!(
            lossy(&inv.output),
            r#"{"count":1}"#,
            "isolated invocation {i}"
        );
        assert_eq!(
            inv.cold,
            i == 0,
            "isolated invocation {i}: cold = {}",
            inv.cold
        );
        environments.insert(inv.environment);
    }
    assert_eq!(
        environments.len(),
        1,
        "isolated invocations ran on several environments: {environments:?}"
    );

    // The same function without isolation is a different environment that keeps state.
    let reused = counter(SpecBuilder {
        name: "counter".into(),
        ..SpecBuilder::default()
    });
    let a = invoke_ok(&pool, &reused, b"");
    let b = invoke_ok(&pool, &reused, b"");
    assert_eq!((count(&a), count(&b)), (1, 2));
    assert!(!environments.contains(&a.environment));
    // And the isolated one is still reset.
    let inv = invoke_ok(&pool, &isolated, b"");
    assert_eq!(count(&inv), 1);
    assert!(environments.contains(&inv.environment) && !inv.cold);
}

#[test]
fn per_invocation_isolation_keeps_logs_and_responses_per_invocation() {
    let (pool, logs) = pool();
    let hello = build(
        SpecBuilder {
            name: "hello".into(),
            isolation: Isolation::PerInvocation,
            ..SpecBuilder::default()
        },
        ember_examples::HELLO,
    );
    for name in ["Ada", "Grace", "Edsger"] {
        let inv = invoke_ok(&pool, &hello, format!(r#"{{"name":"{name}"}}"#).as_bytes());
        assert_eq!(
            lossy(&inv.output),
            format!(r#"{{"message":"Hello, {name}!"}}"#)
        );
        assert_eq!(lossy(&inv.log_tail), format!("hello: greeting {name:?}\n"));
    }
    assert_eq!(
        lossy(&logs.of("hello")),
        "hello: greeting \"Ada\"\nhello: greeting \"Grace\"\nhello: greeting \"Edsger\"\n"
    );
}

#[test]
fn provisioned_environments_are_warm_on_first_use() {
    let (pool, _logs) = pool();
    let spec = spec("json-transform", ember_examples::JSON_TRANSFORM);
    pool.set_provisioned(&spec, 2)
        .unwrap_or_else(|e| panic!("set_provisioned failed: {e}"));
    let stats = pool.stats(spec.key());
    assert_eq!(
        (stats.idle, stats.busy, pool.total()),
        (2, 0, 2),
        "after set_provisioned(2): {stats:?}"
    );

    let barrier = Arc::new(Barrier::new(2));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (pool, spec, barrier) = (&pool, &spec, barrier.clone());
                s.spawn(move || {
                    barrier.wait();
                    let event = format!(r#"{{"items":[{{"name":"p{i}","price":1,"qty":{i}}}]}}"#);
                    (i, invoke_ok(pool, spec, event.as_bytes()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (i, inv) in &results {
        assert!(
            !inv.cold && inv.init_duration.is_none(),
            "invocation {i} on a provisioned function was cold"
        );
        assert_eq!(json(&inv.output)["names"][0], format!("P{i}"));
    }
    let stats = pool.stats(spec.key());
    assert_eq!(
        (stats.idle, stats.busy, pool.total()),
        (2, 0, 2),
        "after two invocations of a function provisioned with 2: {stats:?}"
    );
}

#[test]
fn provisioned_environments_outlive_the_idle_timeout() {
    let (pool, _logs) = pool_with(PoolConfig {
        idle_timeout: Duration::from_millis(100),
        reap_interval: Duration::from_millis(25),
        ..PoolConfig::default()
    });
    let spec = spec("hello", ember_examples::HELLO);
    pool.set_provisioned(&spec, 2)
        .unwrap_or_else(|e| panic!("set_provisioned failed: {e}"));
    invoke_ok(&pool, &spec, b"");
    std::thread::sleep(Duration::from_millis(400));
    assert_eq!(
        pool.stats(spec.key()).idle,
        2,
        "400 ms after use, with a 100 ms idle timeout, a function provisioned with 2"
    );
    // Without provisioning they go.
    pool.set_provisioned(&spec, 0).unwrap();
    assert!(
        wait_for(Duration::from_secs(2), || pool.total() == 0).is_some(),
        "unprovisioned idle environments were not reaped: {:?}",
        pool.stats(spec.key())
    );
}

#[test]
fn set_provisioned_creates_exactly_the_count_while_the_reaper_runs() {
    // The reaper also tops provisioned functions up; with it running all the time, it and
    // set_provisioned must still not both create the missing environments.
    let (pool, _logs) = pool_with(PoolConfig {
        reap_interval: Duration::from_millis(1),
        ..PoolConfig::default()
    });
    let spec = spec("hello", ember_examples::HELLO);
    pool.set_provisioned(&spec, 2)
        .unwrap_or_else(|e| panic!("set_provisioned failed: {e}"));
    let right_after = pool.stats(spec.key());
    std::thread::sleep(Duration::from_millis(100));
    let later = pool.stats(spec.key());
    assert_eq!(
        (right_after.idle, later.idle),
        (2, 2),
        "set_provisioned(2) with the reaper running every 1 ms: {right_after:?} right after, \
         {later:?} 100 ms later"
    );
}

#[test]
fn a_provisioned_version_that_cannot_initialize_holds_up_no_other() {
    let (pool, _logs) = pool();
    let init_trap = spec("init-trap", ember_examples::INIT_TRAP);
    let failure = pool.set_provisioned(&init_trap, 1).unwrap_err();
    assert!(matches!(failure, Failure::Init(_)), "{failure:?}");
    // Each version's own failure only: the worker reports it as that version's.
    let hello = spec("hello", ember_examples::HELLO);
    pool.set_provisioned(&hello, 2)
        .unwrap_or_else(|e| panic!("set_provisioned(hello) failed: {e}"));
    assert_eq!(pool.stats(hello.key()).idle, 2);
    assert_eq!(pool.stats(init_trap.key()).idle, 0);
}

#[test]
fn lowering_the_provisioned_count_shuts_down_the_surplus_at_once() {
    // The default idle timeout (5 minutes) is far off: only the lower count can do it.
    let (pool, _logs) = pool();
    let spec = spec("hello", ember_examples::HELLO);
    pool.set_provisioned(&spec, 3)
        .unwrap_or_else(|e| panic!("set_provisioned failed: {e}"));
    pool.set_provisioned(&spec, 1).unwrap();
    assert_eq!(pool.stats(spec.key()).idle, 1, "3 lowered to 1");
    pool.set_provisioned(&spec, 0).unwrap();
    assert_eq!(pool.total(), 0, "1 lowered to 0");
    // Environments invocations created on demand are not the provisioning's to take.
    invoke_ok(&pool, &spec, b"");
    pool.set_provisioned(&spec, 0).unwrap();
    assert_eq!(pool.stats(spec.key()).idle, 1);
}

/// Invokes counters `a` and `b` alternately and checks they count separately on disjoint
/// environments.
fn assert_separate(what: &str, a: SpecBuilder, b: SpecBuilder) {
    let (pool, _logs) = pool();
    let (a, b) = (counter(a), counter(b));
    assert_ne!(a.key(), b.key(), "{what}: the two specs have the same key");
    let (mut envs_a, mut envs_b) = (HashSet::new(), HashSet::new());
    for n in 1..=3 {
        let ia = invoke_ok(&pool, &a, b"");
        let ib = invoke_ok(&pool, &b, b"");
        assert_eq!(
            (count(&ia), count(&ib)),
            (n, n),
            "{what}: round {n} (shared state?)"
        );
        envs_a.insert(ia.environment);
        envs_b.insert(ib.environment);
    }
    assert!(
        envs_a.is_disjoint(&envs_b),
        "{what}: environments shared: {envs_a:?} and {envs_b:?}"
    );
    let (sa, sb) = (pool.stats(a.key()), pool.stats(b.key()));
    assert_eq!(
        (sa.idle, sb.idle),
        (1, 1),
        "{what}: stats {sa:?} and {sb:?}"
    );
}

#[test]
fn versions_functions_and_accounts_never_share_environments() {
    let base = SpecBuilder {
        name: "counter".into(),
        ..SpecBuilder::default()
    };
    assert_separate(
        "versions 1 and 2",
        SpecBuilder {
            version: "1".into(),
            ..base.clone()
        },
        SpecBuilder {
            version: "2".into(),
            ..base.clone()
        },
    );
    assert_separate(
        "functions a and b",
        SpecBuilder {
            name: "a".into(),
            ..base.clone()
        },
        SpecBuilder {
            name: "b".into(),
            ..base.clone()
        },
    );
    assert_separate(
        "accounts 111 and 222",
        SpecBuilder {
            account: "111".into(),
            ..base.clone()
        },
        SpecBuilder {
            account: "222".into(),
            ..base.clone()
        },
    );
    assert_separate(
        "same version, different environment variables",
        SpecBuilder {
            env: vec![("X".into(), "1".into())],
            ..base.clone()
        },
        SpecBuilder {
            env: vec![("X".into(), "2".into())],
            ..base.clone()
        },
    );
}

#[test]
fn a_failed_command_keeps_its_environment() {
    let (pool, _logs) = pool();
    let exiting = build(
        SpecBuilder {
            name: "exit-1".into(),
            ..SpecBuilder::default()
        },
        &wasm::exiting_command(1),
    );
    let mut environments = HashSet::new();
    for i in 0..3 {
        let (inv, failure) = invoke_err(&pool, &exiting, b"");
        assert!(
            matches!(&failure, Failure::Function(m) if m.contains("exited with code 1")),
            "invocation {i}: {failure:?}"
        );
        assert_eq!(inv.cold, i == 0, "invocation {i}: cold = {}", inv.cold);
        environments.insert(inv.environment);
    }
    assert_eq!(environments.len(), 1, "{environments:?}");
    let exit0 = build(
        SpecBuilder {
            name: "exit-0".into(),
            ..SpecBuilder::default()
        },
        &wasm::exiting_command(0),
    );
    let inv = invoke_ok(&pool, &exit0, b"ignored");
    assert!(inv.output.is_empty());
}

#[test]
fn idle_environments_are_reaped() {
    let (pool, _logs) = pool_with(PoolConfig {
        idle_timeout: Duration::from_millis(200),
        reap_interval: Duration::from_millis(50),
        ..PoolConfig::default()
    });
    let echo = spec("echo", ember_examples::ECHO);
    let hello = spec("hello", ember_examples::HELLO);
    invoke_ok(&pool, &echo, b"x");
    invoke_ok(&pool, &hello, b"");
    let last_use = Instant::now();
    assert_eq!(
        (pool.stats(echo.key()).idle, pool.stats(hello.key()).idle),
        (1, 1)
    );
    let reaped = wait_for(Duration::from_secs(2), || {
        pool.stats(echo.key()).idle == 0 && pool.stats(hello.key()).idle == 0
    });
    let since_use = last_use.elapsed();
    assert!(
        reaped.is_some(),
        "idle environments still there after 2 s: {}",
        pool.total()
    );
    assert!(
        since_use >= Duration::from_millis(190) && since_use <= Duration::from_millis(600),
        "idle environments reaped {since_use:?} after last use (idle timeout 200 ms, reaper every 50 ms)"
    );
    assert_eq!(pool.total(), 0);
}

#[test]
fn old_environments_are_retired() {
    let max_age = Duration::from_millis(300);
    let (pool, _logs) = pool_with(PoolConfig {
        max_age,
        reap_interval: Duration::from_millis(50),
        ..PoolConfig::default()
    });
    let spec = spec("counter", ember_examples::COUNTER);
    let first = invoke_ok(&pool, &spec, b"");
    let created = Instant::now();
    std::thread::sleep(Duration::from_millis(50));
    let young = invoke_ok(&pool, &spec, b"");
    assert!(
        created.elapsed() < max_age,
        "too slow to test a young environment"
    );
    assert_eq!(
        young.environment, first.environment,
        "a young environment was not reused"
    );
    std::thread::sleep((max_age + Duration::from_millis(100)).saturating_sub(created.elapsed()));
    let old = invoke_ok(&pool, &spec, b"");
    assert!(
        old.environment != first.environment && old.cold && count(&old) == 1,
        "an environment older than max_age was reused (environment {}, cold = {}, count {})",
        old.environment,
        old.cold,
        count(&old)
    );
}

#[test]
fn old_environments_are_not_reused_between_reaper_runs() {
    // The reaper does not run during this test: max_age must hold on its own.
    let max_age = Duration::from_millis(300);
    let (pool, _logs) = pool_with(PoolConfig {
        max_age,
        reap_interval: Duration::from_secs(60),
        ..PoolConfig::default()
    });
    let spec = spec("counter", ember_examples::COUNTER);
    let first = invoke_ok(&pool, &spec, b"");
    std::thread::sleep(max_age + Duration::from_millis(100));
    let old = invoke_ok(&pool, &spec, b"");
    assert!(
        old.environment != first.environment && old.cold && count(&old) == 1,
        "environment {} was reused although it is older than max_age ({max_age:?}); \
         second invocation: environment {}, cold = {}, count {}",
        first.environment,
        old.environment,
        old.cold,
        count(&old)
    );
}

/// 32 random bytes from each of `n` invocations of `spec`, with their environments.
fn random_responses(
    pool: &ember_vmm::function::Pool,
    spec: &Arc<ember_vmm::function::FunctionSpec>,
    n: usize,
) -> Vec<(Vec<u8>, u64)> {
    (0..n)
        .map(|_| {
            let inv = invoke_ok(pool, spec, b"");
            assert_eq!(inv.output.len(), 32, "random response {:?}", inv.output);
            (inv.output, inv.environment)
        })
        .collect()
}

fn assert_all_different(what: &str, responses: &[(Vec<u8>, u64)]) {
    let distinct: HashSet<&Vec<u8>> = responses.iter().map(|(r, _)| r).collect();
    assert_eq!(
        distinct.len(),
        responses.len(),
        "{what}: random_get repeated a sequence: {responses:?}"
    );
}

#[test]
fn random_sequences_are_never_repeated() {
    let module = wasm::random_reactor();
    // One environment, state kept.
    let (pool, _logs) = pool();
    let reused = spec("random", &module);
    let responses = random_responses(&pool, &reused, 3);
    assert!(responses.iter().all(|(_, e)| *e == responses[0].1));
    assert_all_different("one environment", &responses);

    // One environment reset to its post-init state after every invocation.
    let isolated = build(
        SpecBuilder {
            name: "random".into(),
            isolation: Isolation::PerInvocation,
            ..SpecBuilder::default()
        },
        &module,
    );
    let responses = random_responses(&pool, &isolated, 3);
    assert!(responses.iter().all(|(_, e)| *e == responses[0].1));
    assert_all_different("per-invocation isolation", &responses);

    // A new environment of the same version every time (all retired at once).
    let (pool, _logs) = pool_with(PoolConfig {
        max_age: Duration::from_nanos(1),
        ..PoolConfig::default()
    });
    let responses = random_responses(&pool, &reused, 3);
    let environments: HashSet<u64> = responses.iter().map(|(_, e)| *e).collect();
    assert_eq!(environments.len(), 3, "{responses:?}");
    assert_all_different("environments of one version", &responses);
}
