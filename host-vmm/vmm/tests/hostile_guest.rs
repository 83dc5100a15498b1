//! Hostile guests, played by the real guest-init (booted with the test-frame flag, its
//! function's environment naming a mode of `ember_wire::hostile`): each attack ends its
//! own environment with the right error, and a second function in the same pool keeps
//! serving (issue 11, items 4 to 6).

mod function_support;

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_vmm::function::{Failure, FunctionSpec, Invocation, Pool, PoolConfig, SpecBuilder};
use ember_wire::hostile;
use function_support::{build, invoke_ok, lossy, pool_with};

/// A pool whose guests honour the hostile modes.
fn hostile_pool() -> (Pool, Arc<function_support::Logs>) {
    pool_with(PoolConfig {
        test_frames: true,
        spare_vms: 0,
        ..PoolConfig::default()
    })
}

fn hostile_spec(mode: hostile::Mode, timeout: Duration) -> Arc<FunctionSpec> {
    build(
        SpecBuilder {
            name: format!("hostile-{}", mode.name()),
            timeout,
            env: vec![(hostile::ENV.into(), mode.name().into())],
            ..SpecBuilder::default()
        },
        ember_examples::ECHO,
    )
}

/// Invokes on another thread, so a host that hangs fails the test instead of the run.
fn invoke_within(
    pool: &Arc<Pool>,
    spec: &Arc<FunctionSpec>,
    payload: Vec<u8>,
    limit: Duration,
) -> (Invocation, Duration) {
    let (done, result) = mpsc::channel();
    let (pool, spec) = (pool.clone(), spec.clone());
    let start = Instant::now();
    std::thread::spawn(move || {
        let inv = pool.invoke(&spec, &payload);
        let _ = done.send((inv, start.elapsed()));
    });
    result
        .recv_timeout(limit)
        .unwrap_or_else(|_| panic!("the invocation did not end within {limit:?}"))
}

/// The pool still serves an ordinary function.
fn still_serves(pool: &Pool) {
    let echo = build(
        SpecBuilder {
            name: "bystander".into(),
            ..SpecBuilder::default()
        },
        ember_examples::ECHO,
    );
    let inv = invoke_ok(pool, &echo, b"{\"still\":\"here\"}");
    assert_eq!(lossy(&inv.output), "{\"still\":\"here\"}");
}

/// A guest that stops reading (and, in `Stall`, advertises no credit) while the host
/// writes a request larger than the host queues: the invocation still ends with a
/// timeout at its deadline, and the VM is stopped.
fn stops_reading(mode: hostile::Mode) {
    let (pool, _logs) = hostile_pool();
    let pool = Arc::new(pool);
    let timeout = Duration::from_secs(1);
    let spec = hostile_spec(mode, timeout);
    let payload = vec![b'x'; 3 << 20];
    let (inv, _) = invoke_within(&pool, &spec, payload, Duration::from_secs(60));
    assert_eq!(inv.error, Some(Failure::Timeout(timeout)), "{inv:?}");
    assert!(
        inv.duration < timeout + Duration::from_millis(700),
        "the invocation took {:?} for a {timeout:?} timeout",
        inv.duration
    );
    assert_eq!(pool.stats(spec.key()).idle, 0, "the environment was kept");
    assert_eq!(pool.total(), 0);
    still_serves(&pool);
}

#[test]
fn a_guest_that_stops_reading_and_gives_no_credit_times_out_at_its_deadline() {
    stops_reading(hostile::Mode::Stall);
}

#[test]
fn a_guest_that_stops_reading_and_spins_times_out_at_its_deadline() {
    stops_reading(hostile::Mode::StallSpin);
}
