//! The pool holds to its capacity: at most `max_environments` environments whose guest
//! memory stays within `memory_mib`. A new environment makes room by shutting down idle
//! environments of other versions (least recently used first, never below a provisioned
//! count), or is refused before anything runs.

mod function_support;

use std::sync::Arc;
use std::time::Duration;

use ember_vmm::function::{Failure, FunctionSpec, PoolConfig, SpecBuilder};
use function_support::{build, invoke_err, invoke_ok, pool_with, wait_for};

fn hello(version: &str, memory_mib: u32) -> Arc<FunctionSpec> {
    build(
        SpecBuilder {
            name: "hello".into(),
            version: version.into(),
            memory_mib,
            ..SpecBuilder::default()
        },
        ember_examples::HELLO,
    )
}

fn capacity(max_environments: usize, memory_mib: u64) -> PoolConfig {
    PoolConfig {
        max_environments,
        memory_mib,
        spare_vms: 0,
        ..PoolConfig::default()
    }
}

fn at_capacity(failure: &Failure) -> bool {
    matches!(failure, Failure::AtCapacity(_))
}

#[test]
fn a_full_pool_shuts_down_the_least_recently_used_idle_environment() {
    let (pool, _logs) = pool_with(capacity(2, u64::MAX));
    let (v1, v2, v3) = (hello("1", 128), hello("2", 128), hello("3", 128));
    invoke_ok(&pool, &v1, b"");
    invoke_ok(&pool, &v2, b"");
    invoke_ok(&pool, &v1, b""); // v2 is now the least recently used.
    assert_eq!(pool.total(), 2);

    let inv = invoke_ok(&pool, &v3, b"");
    assert!(inv.cold);
    assert_eq!(pool.total(), 2, "the pool grew beyond its maximum");
    assert_eq!(
        pool.stats(v2.key()).idle,
        0,
        "v2 (least recently used) stays"
    );
    assert_eq!(
        pool.stats(v1.key()).idle,
        1,
        "v1 (used since v2) was shut down"
    );
    assert!(!invoke_ok(&pool, &v1, b"").cold, "v1 kept its environment");
}

#[test]
fn guest_memory_bounds_the_pool_and_a_function_larger_than_it_is_refused() {
    let (pool, _logs) = pool_with(capacity(64, 256));
    let (small, other) = (hello("1", 128), hello("2", 128));
    let large = hello("3", 256);
    invoke_ok(&pool, &small, b"");
    invoke_ok(&pool, &other, b"");
    // 256 MiB in use: the 256 MiB function needs both idle environments to go.
    assert!(invoke_ok(&pool, &large, b"").cold);
    assert_eq!(pool.total(), 1);
    assert_eq!(pool.stats(large.key()).idle, 1);

    let huge = hello("4", 512);
    let (inv, failure) = invoke_err(&pool, &huge, b"");
    assert!(at_capacity(&failure), "{failure:?}");
    assert!(
        failure.to_string().contains("needs 512 MiB"),
        "the refusal says why: {failure}"
    );
    assert!(!inv.cold && inv.environment == 0, "nothing ran: {inv:?}");
    assert_eq!(
        pool.stats(large.key()).idle,
        1,
        "nothing was shut down for it"
    );
}

#[test]
fn busy_environments_are_never_shut_down_and_a_full_pool_refuses_at_once() {
    let (pool, _logs) = pool_with(capacity(1, u64::MAX));
    let spinning = build(
        SpecBuilder {
            name: "loop".into(),
            timeout: Duration::from_secs(2),
            ..SpecBuilder::default()
        },
        ember_examples::LOOP,
    );
    let other = hello("1", 128);
    std::thread::scope(|s| {
        let running = s.spawn(|| pool.invoke(&spinning, b""));
        assert!(
            wait_for(Duration::from_secs(10), || pool.stats(spinning.key()).busy
                == 1)
            .is_some(),
            "the looping function never started"
        );
        let started = std::time::Instant::now();
        let (_, failure) = invoke_err(&pool, &other, b"");
        assert!(at_capacity(&failure), "{failure:?}");
        assert!(
            failure.to_string().contains("1 of 1 environments"),
            "the refusal says what is in use: {failure}"
        );
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "the refusal waited for the busy environment: {:?}",
            started.elapsed()
        );
        let looped = running.join().unwrap();
        assert!(
            matches!(looped.error, Some(Failure::Timeout(_))),
            "{:?}",
            looped.error
        );
    });
    // The timed-out environment is gone: room again.
    invoke_ok(&pool, &other, b"");
}

#[test]
fn provisioned_environments_are_never_shut_down_for_room() {
    let (pool, _logs) = pool_with(capacity(2, u64::MAX));
    let (kept, v2, v3) = (hello("1", 128), hello("2", 128), hello("3", 128));
    pool.set_provisioned(&kept, 1).unwrap();
    invoke_ok(&pool, &v2, b"");
    // Room for v3 comes from v2, though the provisioned environment was used less recently.
    assert!(invoke_ok(&pool, &v3, b"").cold);
    assert_eq!(pool.stats(kept.key()).idle, 1);
    assert_eq!(pool.stats(v2.key()).idle, 0);

    // Provisioning beyond the capacity fails for the part that does not fit, and says so.
    let failure = pool.set_provisioned(&v2, 2).unwrap_err();
    assert!(at_capacity(&failure), "{failure:?}");
    assert_eq!(pool.total(), 2, "{:?}", pool.totals());
}
