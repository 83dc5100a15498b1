//! Asynchronous (`Event`) invocations end to end: the real `ember-control` (killed and
//! restarted on its data directory), real `emberd` workers running real micro-VMs (KVM
//! required), and the stock AWS CLI and boto3 as clients. What happened to each event is
//! read from control's own record of it, the `events` table of `DIR/registry.db`, opened
//! read-only; what a function did is checked through the function itself where it can be.
//! The queue's statements also run on a real PostgreSQL shared by two "instances".

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_core::keys::Keyring;
use ember_core::sealed::Sealer;
use ember_store::events::{self as queue, Event, EventState};
use ember_store::Registry;
use ember_testkit::postgres::Postgres;
use ember_testkit::worker::Worker;
use ember_testkit::{aws_error, zip, Control};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{ConnectOptions, SqliteConnection};

/// The first retry's delay the tests run with (Lambda's is a minute).
const RETRY_DELAY_MS: u64 = 300;

/// An event that keeps sha-heavy busy long enough to be seen running.
const SLOW_EVENT: &str = r#"{"mib":16}"#;

/// How long the tests wait for events to settle.
const SETTLE: Duration = Duration::from_secs(90);

/// Control with fast heartbeats and short retry delays.
fn control(data_dir: &Path, extra: &[&str]) -> Control {
    let delay = RETRY_DELAY_MS.to_string();
    let mut args = vec![
        "--heartbeat-ms",
        "200",
        "--event-retry-delay-ms",
        delay.as_str(),
    ];
    args.extend_from_slice(extra);
    Control::start_with(data_dir, &args)
}

/// Creates function `name` from `module`, with `extra` create-function arguments.
fn create(control: &Control, dir: &Path, name: &str, module: &[u8], extra: &[&str]) {
    let package = dir.join(format!("{name}.zip"));
    std::fs::write(&package, zip(&[(&format!("{name}.wasm"), module)])).unwrap();
    control.create_function(name, &package, extra);
}

/// `aws lambda invoke --invocation-type Event`: requires the CLI's 202 and an empty body.
fn invoke_event(control: &Control, dir: &Path, name: &str, payload: &str) {
    let out = dir.join("event-response.json");
    let printed = control.aws_json(&[
        "invoke",
        "--function-name",
        name,
        "--invocation-type",
        "Event",
        "--payload",
        payload,
        out.to_str().unwrap(),
    ]);
    assert_eq!(printed["StatusCode"], 202, "{printed}");
    assert_eq!(
        std::fs::read(&out).unwrap(),
        b"",
        "an Event answer has no body"
    );
}

/// `aws lambda invoke` (synchronous): the response body.
fn invoke(control: &Control, dir: &Path, name: &str) -> String {
    let out = dir.join("response.json");
    let printed = control.aws_json(&["invoke", "--function-name", name, out.to_str().unwrap()]);
    assert_eq!(printed["StatusCode"], 200, "{printed}");
    std::fs::read_to_string(&out).unwrap()
}

/// One event as control recorded it.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
struct EventRow {
    id: String,
    function_name: String,
    state: String,
    attempts: i64,
    deferrals: i64,
    last_error: Option<String>,
}

/// Control's `events` table, read-only, as control left it at each look.
struct EventTable {
    path: PathBuf,
    runtime: tokio::runtime::Runtime,
}

impl EventTable {
    fn open(data_dir: &Path) -> EventTable {
        EventTable {
            path: data_dir.join("registry.db"),
            runtime: tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap(),
        }
    }

    /// Every event of `function`.
    fn of(&self, function: &str) -> Vec<EventRow> {
        self.runtime.block_on(async {
            let mut db: SqliteConnection = SqliteConnectOptions::new()
                .filename(&self.path)
                .read_only(true)
                .connect()
                .await
                .expect("open registry.db read-only");
            sqlx::query_as(
                "SELECT id, function_name, state, attempts, deferrals, last_error FROM events \
                 WHERE function_name = $1 ORDER BY enqueued_at_ms, id",
            )
            .bind(function)
            .fetch_all(&mut db)
            .await
            .expect("read the events table")
        })
    }

    /// Waits until `function` has `count` events, all in `state`, and returns them.
    fn wait_for(&self, function: &str, count: usize, state: &str) -> Vec<EventRow> {
        self.wait_until(function, state, |rows| {
            rows.len() == count && rows.iter().all(|row| row.state == state)
        })
    }

    /// Waits until `function`'s events are as `done` wants them (`what` says how), and
    /// returns them.
    fn wait_until(
        &self,
        function: &str,
        what: &str,
        done: impl Fn(&[EventRow]) -> bool,
    ) -> Vec<EventRow> {
        let started = Instant::now();
        loop {
            let rows = self.of(function);
            if done(&rows) {
                return rows;
            }
            assert!(
                started.elapsed() < SETTLE,
                "{function}'s events did not become {what} within {SETTLE:?}: {rows:#?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Queues `count` events of `function` (sha-heavy) held back by a reserved concurrency of
/// 0, which throttles them without spending attempts, then lets them all start together.
fn queue_together(
    control: &Control,
    events: &EventTable,
    dir: &Path,
    function: &str,
    count: usize,
) {
    control.aws_json(&[
        "put-function-concurrency",
        "--function-name",
        function,
        "--reserved-concurrent-executions",
        "0",
    ]);
    for _ in 0..count {
        invoke_event(control, dir, function, SLOW_EVENT);
    }
    let held = events.wait_until(function, "throttled", |rows| {
        rows.len() == count && rows.iter().all(|row| row.deferrals >= 1)
    });
    assert!(held.iter().all(|row| row.attempts == 0), "{held:#?}");
    control.aws_json(&["delete-function-concurrency", "--function-name", function]);
}

#[test]
fn aws_cli_events_run_once_or_retry_twice_then_fail() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = control(&data, &[]);
    let _worker = Worker::start(&control, &dir.path().join("worker"));
    let events = EventTable::open(&data);
    create(&control, dir.path(), "hello", ember_examples::HELLO, &[]);
    create(
        &control,
        dir.path(),
        "counter",
        ember_examples::COUNTER,
        &[],
    );
    create(&control, dir.path(), "trap", ember_examples::TRAP, &[]);

    invoke_event(&control, dir.path(), "hello", r#"{"name":"Ada"}"#);
    let done = events.wait_for("hello", 1, "succeeded");
    assert_eq!((done[0].attempts, done[0].last_error.as_deref()), (1, None));

    // The events really ran the function: one warm counter saw each of them, in order.
    for n in 1..=3 {
        invoke_event(&control, dir.path(), "counter", "{}");
        events.wait_for("counter", n, "succeeded");
    }
    let count: serde_json::Value =
        serde_json::from_str(&invoke(&control, dir.path(), "counter")).unwrap();
    assert_eq!(count["count"], 4, "{count}");

    // A function error: the first attempt and two retries, after one and two delays.
    let started = Instant::now();
    invoke_event(&control, dir.path(), "trap", "{}");
    let failed = events.wait_for("trap", 1, "failed");
    assert_eq!(failed[0].attempts, 3, "{failed:?}");
    assert_eq!(failed[0].deferrals, 0, "{failed:?}");
    assert!(
        started.elapsed() >= Duration::from_millis(3 * RETRY_DELAY_MS),
        "retried without waiting: {:?}",
        started.elapsed()
    );
    assert!(failed[0].last_error.is_some(), "{failed:?}");

    // Asynchronous events are at most 256 KiB, and only for functions that exist.
    let name = "a".repeat(256 * 1024 - r#"{"name":""}"#.len());
    let largest = dir.path().join("largest.json");
    std::fs::write(&largest, format!(r#"{{"name":"{name}"}}"#)).unwrap();
    let largest = format!("fileb://{}", largest.display());
    invoke_event(&control, dir.path(), "hello", &largest);
    events.wait_for("hello", 2, "succeeded");
    let oversize = dir.path().join("oversize.json");
    std::fs::write(&oversize, format!(r#"{{"name":"{name}a"}}"#)).unwrap();
    let refused = control.aws(&[
        "invoke",
        "--function-name",
        "hello",
        "--invocation-type",
        "Event",
        "--payload",
        &format!("fileb://{}", oversize.display()),
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert_eq!(aws_error(&refused), "RequestTooLargeException");
    let missing = control.aws(&[
        "invoke",
        "--function-name",
        "absent",
        "--invocation-type",
        "Event",
        dir.path().join("x.json").to_str().unwrap(),
    ]);
    assert_eq!(aws_error(&missing), "ResourceNotFoundException");
    assert_eq!(events.of("absent"), []);
    assert_eq!(events.of("hello").len(), 2);

    // boto3: 202, the request id is the event's, 413 over the limit (see the script).
    let mut python = control.boto3("invoke_events_boto3.py", &control.credentials());
    python
        .arg(&control.endpoint)
        .arg(control.ca())
        .arg(control.credentials());
    let out = python.output().expect("run python3");
    assert!(
        out.status.success(),
        "boto3 events failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let request_id = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let all = events.wait_for("hello", 3, "succeeded");
    assert!(
        all.iter().any(|row| row.id == request_id),
        "no event {request_id}: {all:#?}"
    );
}

#[test]
fn events_wait_for_workers_and_survive_control_crashes() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let events = EventTable::open(&data);

    // No worker yet: events wait, costing no attempt.
    let first = control(&data, &[]);
    create(&first, dir.path(), "hello", ember_examples::HELLO, &[]);
    create(&first, dir.path(), "doomed", ember_examples::HELLO, &[]);
    for name in ["Ada", "Grace", "Edsger"] {
        invoke_event(
            &first,
            dir.path(),
            "hello",
            &format!(r#"{{"name":"{name}"}}"#),
        );
    }
    invoke_event(&first, dir.path(), "doomed", "{}");
    std::thread::sleep(Duration::from_millis(3 * RETRY_DELAY_MS));
    let waiting = events.of("hello");
    assert_eq!(waiting.len(), 3);
    for row in &waiting {
        // Between waits, an event is `running` for the moment it takes to find no worker.
        assert!(
            ["pending", "running"].contains(&row.state.as_str()),
            "{row:?}"
        );
        assert_eq!(row.attempts, 0, "{row:?}");
        assert!(row.deferrals >= 1, "{row:?}");
    }

    // A crash loses none of them; a function deleted meanwhile drops its event.
    first.kill();
    let second = control(&data, &[]);
    second.aws_json(&["delete-function", "--function-name", "doomed"]);
    let worker = Worker::start(&second, &dir.path().join("worker"));
    let done = events.wait_for("hello", 3, "succeeded");
    assert!(done.iter().all(|row| row.attempts == 1), "{done:#?}");
    events.wait_for("doomed", 1, "dropped");

    // A crash in the middle of attempts: they run again after the restart.
    create(
        &second,
        dir.path(),
        "slow",
        ember_examples::SHA_HEAVY,
        &["--timeout", "120"],
    );
    queue_together(&second, &events, dir.path(), "slow", 2);
    events.wait_for("slow", 2, "running");
    second.kill();
    drop(worker);
    let third = control(&data, &[]);
    let _worker = Worker::start(&third, &dir.path().join("worker-2"));
    let done = events.wait_for("slow", 2, "succeeded");
    assert!(done.iter().all(|row| row.attempts == 1), "{done:#?}");
}

#[test]
fn events_on_a_killed_worker_run_again_on_another() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = control(&data, &[]);
    let mut doomed = Worker::start(&control, &dir.path().join("doomed"));
    let _survivor = Worker::start(&control, &dir.path().join("survivor"));
    let events = EventTable::open(&data);
    create(
        &control,
        dir.path(),
        "slow",
        ember_examples::SHA_HEAVY,
        &["--timeout", "120"],
    );
    queue_together(&control, &events, dir.path(), "slow", 4);
    // Four at once on two idle workers: each worker runs some.
    events.wait_for("slow", 4, "running");
    doomed.kill();
    let done = events.wait_for("slow", 4, "succeeded");
    let retried = done.iter().filter(|row| row.attempts == 2).count();
    assert!(retried >= 1, "no event was on the killed worker: {done:#?}");
    assert!(
        done.iter().all(|row| row.attempts <= 2),
        "an event failed more than once: {done:#?}"
    );
}

#[test]
fn events_expire_unrun_after_the_maximum_age() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = control(&data, &["--max-event-age-seconds", "2"]);
    create(&control, dir.path(), "hello", ember_examples::HELLO, &[]);
    let started = Instant::now();
    invoke_event(&control, dir.path(), "hello", "{}");
    let expired = EventTable::open(&data).wait_for("hello", 1, "expired");
    assert!(started.elapsed() >= Duration::from_secs(2));
    assert_eq!(expired[0].attempts, 0, "{expired:?}");
    assert!(expired[0].deferrals >= 1, "{expired:?}");
}

/// Two instances on one PostgreSQL database race for the same events: each is claimed
/// once, and only claims that ran out are taken back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn instances_sharing_postgres_claim_each_event_once() {
    let postgres = Postgres::shared();
    let url = postgres.database("events");
    // Both instances share the master keys, as they must to read each other's events.
    let keys = tempfile::tempdir().unwrap();
    let sealer = Arc::new(Sealer::new(Keyring::load_or_create(keys.path()).unwrap()));
    let one = Registry::open(&url)
        .await
        .unwrap()
        .with_sealer(sealer.clone());
    let other = Registry::open(&url).await.unwrap().with_sealer(sealer);
    let event = |i: u8| Event {
        id: format!("e{i:02}"),
        account: "111111111111".into(),
        function: "f".into(),
        qualifier: (i % 2 == 1).then(|| "live".to_owned()),
        payload: vec![i, 0, 255, b'{'],
        attempts: 0,
        deferrals: 0,
        enqueued_at_ms: 1_000 + u64::from(i),
    };
    for i in 0..20 {
        queue::insert(&one, &event(i)).await.unwrap();
    }
    let race = |registry: Registry| {
        tokio::spawn(async move {
            let mut won = Vec::new();
            for id in queue::due(registry.pool(), 5_000, 100).await.unwrap() {
                if let Some(event) = queue::claim(&registry, &id, 5_000, 60_000).await.unwrap() {
                    won.push(event);
                }
            }
            won
        })
    };
    let (a, b) = tokio::join!(race(one.clone()), race(other.clone()));
    let mut claimed: Vec<Event> = a.unwrap().into_iter().chain(b.unwrap()).collect();
    claimed.sort_by(|x, y| x.id.cmp(&y.id));
    assert_eq!(claimed, (0..20).map(event).collect::<Vec<_>>());
    assert_eq!(queue::next_due(one.pool()).await.unwrap(), None);

    // One event is retried, one finishes; the rest stay claimed until their claims end.
    let mut retried = claimed[0].clone();
    retried.attempts = 1;
    queue::retry_at(one.pool(), &retried, 7_000, "trap")
        .await
        .unwrap();
    queue::finish(one.pool(), &claimed[1], EventState::Succeeded, None, 8_000)
        .await
        .unwrap();
    assert_eq!(queue::next_due(other.pool()).await.unwrap(), Some(7_000));
    assert_eq!(
        queue::reclaim(other.pool(), 59_999, false).await.unwrap(),
        0
    );
    assert_eq!(
        queue::reclaim(other.pool(), 60_000, false).await.unwrap(),
        18
    );
    let again = queue::claim(&other, "e00", 60_000, 120_000).await.unwrap();
    assert_eq!(again.map(|e| e.attempts), Some(1));
    assert_eq!(queue::prune(other.pool(), 8_000).await.unwrap(), 0);
    assert_eq!(queue::prune(other.pool(), 8_001).await.unwrap(), 1);
}
