//! Quotas between tenants (issue 11 item 7), end to end: the real `ember-control`, a real
//! `emberd` worker running real micro-VMs (KVM required), the operator's
//! `ember-control account set-concurrency`, and boto3 and the AWS CLI as clients.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ember_testkit::worker::Worker;
use ember_testkit::{binaries, zip, Control};

/// Control with fast heartbeats and short event retry delays.
fn control(data_dir: &Path) -> Control {
    Control::start_with(
        data_dir,
        &["--heartbeat-ms", "200", "--event-retry-delay-ms", "300"],
    )
}

fn create(control: &Control, dir: &Path, name: &str, module: &[u8], extra: &[&str]) {
    let package = dir.join(format!("{name}.zip"));
    std::fs::write(&package, zip(&[(&format!("{name}.wasm"), module)])).unwrap();
    control.create_function(name, &package, extra);
}

/// `ember-control account set-concurrency ACCOUNT LIMIT`: its output, or its error.
fn set_concurrency(control: &Control, account: &str, limit: &str) -> Result<String, String> {
    let out = Command::new(binaries::binary("ember-control", "ember-control"))
        .args(["account", "set-concurrency", account, limit, "--data-dir"])
        .arg(&control.data_dir)
        .output()
        .expect("run ember-control account set-concurrency");
    match out.status.success() {
        true => Ok(String::from_utf8_lossy(&out.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&out.stderr).into_owned()),
    }
}

/// One boto3 invocation of `function`, never retried: (status, error code, Reason).
fn invoke_once(control: &Control, function: &str) -> (u64, Option<String>, Option<String>) {
    let out = control
        .boto3("quota_invoke_boto3.py", &control.credentials())
        .arg(&control.endpoint)
        .arg(control.ca())
        .arg(control.credentials())
        .arg("ember")
        .arg(function)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "boto3 invoke failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = |key: &str| answer[key].as_str().map(str::to_owned);
    (
        answer["status"].as_u64().unwrap(),
        text("code"),
        text("reason"),
    )
}

/// Invokes `spin` (6 s of looping) from another thread, and returns once `worker` runs it
/// (before, another invocation could take the only slot first); its output once it ends.
fn spin(control: &Control, worker: &Worker) -> std::thread::JoinHandle<std::process::Output> {
    let credentials = control.credentials();
    let mut python = control.boto3("quota_invoke_boto3.py", &credentials);
    python
        .arg(&control.endpoint)
        .arg(control.ca())
        .arg(&credentials)
        .arg("ember")
        .arg("spin");
    let spinning = std::thread::spawn(move || python.output().expect("run python3"));
    let url = format!("{}/metrics", worker.metrics_endpoint);
    let started = Instant::now();
    loop {
        let metrics = reqwest::blocking::get(&url)
            .and_then(|response| response.text())
            .unwrap_or_default();
        if metrics.lines().any(|line| {
            line.strip_prefix("emberd_in_flight ")
                .and_then(|n| n.trim().parse::<f64>().ok())
                .is_some_and(|n| n >= 1.0)
        }) {
            return spinning;
        }
        assert!(
            !spinning.is_finished() && started.elapsed() < Duration::from_secs(60),
            "spin never ran"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Invokes `hello` until it is refused (429) while `spinning` runs; the refusal. Answers
/// before it must be 200; `never` is the failure if spin ends first (its client's
/// start-up is slow on a loaded machine, so no fixed window).
fn first_refusal(
    control: &Control,
    spinning: &std::thread::JoinHandle<std::process::Output>,
    never: &str,
) -> (u64, Option<String>, Option<String>) {
    let started = Instant::now();
    loop {
        let answer = invoke_once(control, "hello");
        if answer.0 == 429 {
            return answer;
        }
        assert_eq!(answer.0, 200, "{answer:?}");
        assert!(
            !spinning.is_finished() && started.elapsed() < Duration::from_secs(60),
            "{never}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The state of the events of `function`, from control's `events` table.
fn event_states(data_dir: &Path, function: &str) -> Vec<(String, i64)> {
    all_events(data_dir)
        .into_iter()
        .filter(|(f, _, _)| f == function)
        .map(|(_, state, deferrals)| (state, deferrals))
        .collect()
}

/// Every event's (function, state, deferrals), from `DIR/registry.db` opened read-only.
fn all_events(data_dir: &Path) -> Vec<(String, String, i64)> {
    use sqlx::sqlite::SqliteConnectOptions;
    use sqlx::{ConnectOptions, SqliteConnection};
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let mut db: SqliteConnection = SqliteConnectOptions::new()
            .filename(data_dir.join("registry.db"))
            .read_only(true)
            .connect()
            .await
            .unwrap();
        sqlx::query_as("SELECT function_name, state, deferrals FROM events")
            .fetch_all(&mut db)
            .await
            .unwrap()
    })
}

#[test]
fn the_account_limit_throttles_unreserved_functions_and_defers_events() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = control(&data);
    let worker = Worker::start(&control, &dir.path().join("worker"));
    let account = control.account();
    create(&control, dir.path(), "hello", ember_examples::HELLO, &[]);
    create(
        &control,
        dir.path(),
        "spin",
        ember_examples::LOOP,
        &["--timeout", "6"],
    );

    // The operator's limit leaves 100 beyond reservations: 1 reserved needs at least 101.
    control.aws_json(&[
        "put-function-concurrency",
        "--function-name",
        "hello",
        "--reserved-concurrent-executions",
        "1",
    ]);
    let refused = set_concurrency(&control, &account, "100").unwrap_err();
    assert!(refused.contains("at least 101"), "{refused}");
    let set = set_concurrency(&control, "admin", "101").unwrap();
    assert!(
        set.contains("concurrency limit 101, reserved 1, unreserved 100"),
        "{set}"
    );
    let bad = set_concurrency(&control, &account, "lots").unwrap_err();
    assert!(bad.contains("invalid concurrency limit"), "{bad}");
    control.aws_json(&["delete-function-concurrency", "--function-name", "hello"]);

    // One invocation in flight uses up an account limited to 1.
    let set = set_concurrency(&control, &account, "1").unwrap();
    assert!(
        set.contains("concurrency limit 1, reserved 0, unreserved 1"),
        "{set}"
    );
    let spinning = spin(&control, &worker);
    let throttle = first_refusal(
        &control,
        &spinning,
        "hello was never throttled while spin ran in an account limited to 1",
    );
    assert_eq!(
        throttle,
        (
            429,
            Some("TooManyRequestsException".to_owned()),
            Some("ConcurrentInvocationLimitExceeded".to_owned())
        )
    );
    // An event that meets the limit waits for it instead of failing.
    let out = dir.path().join("event.json");
    control.aws_json(&[
        "invoke",
        "--function-name",
        "hello",
        "--invocation-type",
        "Event",
        out.to_str().unwrap(),
    ]);
    let spun = spinning.join().unwrap();
    assert!(spun.status.success(), "{spun:?}");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = event_states(&data, "hello");
        if states.iter().any(|(state, _)| state == "succeeded") {
            assert!(states[0].1 >= 1, "the event was never deferred: {states:?}");
            break;
        }
        assert!(
            states
                .iter()
                .all(|(state, _)| state == "pending" || state == "running"),
            "{states:?}"
        );
        assert!(Instant::now() < deadline, "the event never ran: {states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    // Once it ended, the account's invocations run again; `default` restores 1000.
    assert_eq!(invoke_once(&control, "hello").0, 200);
    let set = set_concurrency(&control, &account, "default").unwrap();
    assert!(set.contains("concurrency limit 1000"), "{set}");
}

#[test]
fn a_full_worker_turns_work_away_and_control_throttles_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = control(&data);
    // Room for one environment: while `spin` holds it, nothing else fits.
    let worker = Worker::start_with(&control, &dir.path().join("worker"), &["--max-envs", "1"]);
    create(&control, dir.path(), "hello", ember_examples::HELLO, &[]);
    create(
        &control,
        dir.path(),
        "spin",
        ember_examples::LOOP,
        &["--timeout", "6"],
    );
    let spinning = spin(&control, &worker);
    // Before spin's environment exists, hello may still take the room (and give it back
    // idle, to be shut down for spin).
    let refused = first_refusal(
        &control,
        &spinning,
        "hello was never turned away while spin held the worker's only environment",
    );
    assert_eq!(
        refused,
        (429, Some("TooManyRequestsException".to_owned()), None),
        "a full fleet is a throttle, retried by the SDKs, with no concurrency Reason"
    );
    // An event that finds no room waits for it instead of failing.
    let out = dir.path().join("event.json");
    control.aws_json(&[
        "invoke",
        "--function-name",
        "hello",
        "--invocation-type",
        "Event",
        out.to_str().unwrap(),
    ]);
    let spun = spinning.join().unwrap();
    assert!(spun.status.success(), "{spun:?}");

    // Room again once spin ended (the deferred event may hold it for a moment).
    let started = Instant::now();
    while invoke_once(&control, "hello").0 != 200 {
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "hello never ran again after spin ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let states = event_states(&data, "hello");
        if states.iter().any(|(state, _)| state == "succeeded") {
            assert!(states[0].1 >= 1, "the event was never deferred: {states:?}");
            break;
        }
        assert!(Instant::now() < deadline, "the event never ran: {states:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
    let scrape = |endpoint: &str| {
        reqwest::blocking::get(format!("{endpoint}/metrics"))
            .and_then(|response| response.text())
            .unwrap()
    };
    let worker_metrics = scrape(&worker.metrics_endpoint);
    assert!(
        worker_metrics.contains(r#"emberd_invocations_total{outcome="at_capacity"}"#),
        "{worker_metrics}"
    );
    let control_metrics = scrape(&control.metrics_endpoint);
    assert!(
        control_metrics.contains(r#"outcome="no_capacity""#),
        "{control_metrics}"
    );
}
