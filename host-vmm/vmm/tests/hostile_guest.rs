//! Hostile guests, played by the real guest-init (booted with the test-frame flag, its
//! function's environment naming a mode of `ember_wire::hostile`): each attack ends its
//! own environment with the right error, and a second function in the same pool keeps
//! serving (issue 11, items 4 to 6).

mod function_support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_vmm::function::{
    EnvError, Failure, FunctionSpec, Invocation, Pool, PoolConfig, SpecBuilder,
};
use ember_vmm::VmExit;
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

/// How a hostile invocation must end: its VM ended by a guest error; returns its message.
fn guest_error(inv: &Invocation) -> String {
    match &inv.error {
        Some(Failure::Crashed(e)) => match &**e {
            EnvError::VmEnded(VmExit::GuestError(why)) => why.to_string(),
            other => panic!("the VM should end with a guest error, got {other}"),
        },
        other => panic!("the environment should have crashed, got {other:?}"),
    }
}

/// Runs one invocation of a guest playing `mode`; checks that its VM, and only it, is gone.
fn attack(mode: hostile::Mode) -> Invocation {
    let (pool, _logs) = hostile_pool();
    let pool = Arc::new(pool);
    let spec = hostile_spec(mode, Duration::from_secs(20));
    let (inv, _) = invoke_within(&pool, &spec, b"{}".to_vec(), Duration::from_secs(60));
    assert_eq!(pool.total(), 0, "the hostile environment was kept");
    still_serves(&pool);
    inv
}

#[test]
fn a_guest_that_floods_resets_without_rx_buffers_loses_its_vm() {
    let inv = attack(hostile::Mode::FloodControl);
    let why = guest_error(&inv);
    assert!(why.contains("control packets unread"), "{why}");
}

#[test]
fn a_guest_with_an_impossible_ring_index_loses_its_vm() {
    let inv = attack(hostile::Mode::BadRing);
    let why = guest_error(&inv);
    assert!(why.contains("virtqueue"), "{why}");
}

/// Counts the host's log records that carry a guest's serial flood.
struct FloodCounter;

static FLOOD_LINES: AtomicUsize = AtomicUsize::new(0);

impl log::Log for FloodCounter {
    fn enabled(&self, _: &log::Metadata<'_>) -> bool {
        true
    }

    fn log(&self, record: &log::Record<'_>) {
        if record.args().to_string().contains("serial flood line") {
            FLOOD_LINES.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn flush(&self) {}
}

#[test]
fn a_guest_flooding_its_serial_port_gets_a_bounded_share_of_the_host_log() {
    static LOGGER: FloodCounter = FloodCounter;
    log::set_logger(&LOGGER).expect("the only logger of this test binary");
    log::set_max_level(log::LevelFilter::Trace);
    let start = Instant::now();
    let (pool, _logs) = hostile_pool();
    let spec = hostile_spec(hostile::Mode::FloodSerial, Duration::from_secs(20));
    for _ in 0..2 {
        let inv = invoke_ok(&pool, &spec, b"{\"flood\":1}");
        assert_eq!(lossy(&inv.output), "{\"flood\":1}", "it still serves");
    }
    still_serves(&pool);
    let seconds = start.elapsed().as_secs() as usize + 1;
    let logged = FLOOD_LINES.load(Ordering::Relaxed);
    let printed = 2 * hostile::SERIAL_FLOOD_LINES as usize;
    eprintln!("{logged} of {printed} serial lines reached the host log in {seconds} s");
    assert!(
        logged > 0 && logged <= 50 * seconds + 50,
        "{logged} of {printed} serial lines reached the host log in {seconds} s"
    );
}
