//! The fleet under load, end to end: two real `emberd` workers (real micro-VMs, KVM
//! required) behind the real `ember-control`, driven by boto3 from many threads. A worker
//! killed mid-run fails only the invocations it was running; a lease ending under steady
//! load drains without failing any; a control restart keeps its workers.

use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use ember_testkit::worker::Worker;
use ember_testkit::{zip, Control};
use serde_json::Value;

/// Control with heartbeats fast enough for the tests to see a worker die.
fn control(data: &Path, extra: &[&str]) -> Control {
    let mut args = vec!["--heartbeat-ms", "200"];
    args.extend_from_slice(extra);
    Control::start_with(data, &args)
}

fn create(control: &Control, dir: &Path, name: &str, module: &[u8], timeout: &str) {
    let package = dir.join(format!("{name}.zip"));
    std::fs::write(&package, zip(&[("f.wasm", module)])).unwrap();
    control.create_function(name, &package, &["--timeout", timeout]);
}

/// A boto3 load (`py/fleet_load_boto3.py`), started now, finished by [`Load::results`].
struct Load(std::process::Child);

impl Load {
    /// `count` invocations from `threads` threads.
    fn start(control: &Control, function: &str, payload: &str, threads: u32, count: u32) -> Load {
        Load::start_until(control, function, payload, threads, count, None)
    }

    /// Invocations from `threads` threads until `until`, or `count` of them.
    fn start_until(
        control: &Control,
        function: &str,
        payload: &str,
        threads: u32,
        count: u32,
        until: Option<SystemTime>,
    ) -> Load {
        let until = until.map_or(0.0, |t| {
            t.duration_since(SystemTime::UNIX_EPOCH)
                .unwrap()
                .as_secs_f64()
        });
        let mut command = control.boto3("fleet_load_boto3.py", &control.credentials());
        command
            .args([&control.endpoint, control.ca().to_str().unwrap()])
            .args([function, payload])
            .args([threads.to_string(), count.to_string(), until.to_string()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        Load(command.spawn().expect("run the boto3 load"))
    }

    /// `{"ok", "function_errors", "errors": {code: n}}`.
    fn results(self) -> Value {
        let out = self.0.wait_with_output().unwrap();
        assert!(out.status.success(), "the boto3 load failed");
        serde_json::from_slice(&out.stdout).expect("the load prints JSON")
    }
}

fn count(results: &Value, key: &str) -> u64 {
    results[key].as_u64().unwrap_or(0)
}

/// Waits until `worker` runs at least one invocation, by its `emberd_in_flight` metric.
fn wait_in_flight(worker: &Worker) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let url = format!("{}/metrics", worker.metrics_endpoint);
    loop {
        let text = reqwest::blocking::get(&url)
            .and_then(|response| response.text())
            .unwrap_or_default();
        let in_flight = text
            .lines()
            .find_map(|line| line.strip_prefix("emberd_in_flight "))
            .and_then(|value| value.trim().parse::<f64>().ok())
            .unwrap_or(0.0);
        if in_flight >= 1.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "worker {} ran nothing within 60 s",
            worker.id
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn two_workers_share_the_load_and_a_killed_one_fails_only_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(&dir.path().join("data"), &[]);
    // SHA-256 of 6 MiB in the guest's interpreter: seconds, so the kill lands mid-run.
    create(
        &control,
        dir.path(),
        "sha",
        ember_examples::SHA_HEAVY,
        "120",
    );
    let mut doomed = Worker::start(&control, &dir.path().join("doomed"));
    let survivor = Worker::start(&control, &dir.path().join("survivor"));

    let load = Load::start(&control, "sha", r#"{"mib":6}"#, 6, 6);
    // Kill only once both workers are running some of them.
    for worker in [&doomed, &survivor] {
        wait_in_flight(worker);
    }
    doomed.kill();
    let results = load.results();
    let failed = &results["errors"];
    // The router spread the six over both workers: the survivor's finished, the killed
    // one's failed with a clear error, and nothing else happened.
    assert!(count(&results, "ok") >= 1, "{results}");
    assert!(
        failed["ServiceException"].as_u64().unwrap_or(0) >= 1,
        "{results}"
    );
    assert_eq!(
        count(&results, "ok") + failed["ServiceException"].as_u64().unwrap_or(0),
        6,
        "{results}"
    );
    assert_eq!(count(&results, "function_errors"), 0, "{results}");

    // Everything after runs on the survivor.
    let after = Load::start(&control, "sha", r#"{"mib":0}"#, 4, 8).results();
    assert_eq!(count(&after, "ok"), 8, "{after}");
}

#[test]
fn a_lease_ending_under_steady_load_drains_without_failing_any() {
    let dir = tempfile::tempdir().unwrap();
    // A 24 s lease: the drain margin is 1.2 s (a twentieth of it).
    let control = control(&dir.path().join("data"), &["--lease-seconds", "24"]);
    create(&control, dir.path(), "hello", ember_examples::HELLO, "10");
    let mut first = Worker::start(&control, &dir.path().join("first"));
    let first_joined = SystemTime::now();
    std::thread::sleep(Duration::from_secs(6));
    let mut second = Worker::start(&control, &dir.path().join("second"));

    // Steady load from now, past the first worker's drain (22.8 s after it joined) to
    // before the second one's (6 s later than that).
    let until = first_joined + Duration::from_millis(25_500);
    let load = Load::start_until(&control, "hello", r#"{"name":"load"}"#, 4, 0, Some(until));
    let results = load.results();
    let status = first.wait_exit(Duration::from_secs(10));
    assert!(status.success(), "the drained worker exits 0: {status}");
    assert!(count(&results, "ok") > 50, "{results}");
    assert_eq!(results["errors"], serde_json::json!({}), "{results}");
    assert_eq!(count(&results, "function_errors"), 0, "{results}");
    assert!(
        second.try_running(),
        "the second worker's lease has not ended"
    );
}

#[test]
fn a_restarted_control_keeps_its_workers() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    // The worker dials the same fleet address after the restart.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let fleet = format!("127.0.0.1:{port}");
    let first = control(&data, &["--fleet-listen", &fleet]);
    create(&first, dir.path(), "hello", ember_examples::HELLO, "10");
    let worker = Worker::start(&first, &dir.path().join("worker"));
    let once = Load::start(&first, "hello", "{}", 1, 3).results();
    assert_eq!(count(&once, "ok"), 3, "{once}");

    first.kill();
    std::thread::sleep(Duration::from_millis(600));
    let second = control(&data, &["--fleet-listen", &fleet]);
    // The same worker, heartbeating again, runs invocations without registering anew.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let results = Load::start(&second, "hello", "{}", 1, 1).results();
        if count(&results, "ok") == 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not come back: {results}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let status = Command::new("kill")
        .args(["-0", &worker.pid().to_string()])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "the worker kept running through the restart"
    );
}

/// `aws lambda invoke`: the CLI's output and the response body.
fn invoke(control: &Control, dir: &Path, function: &str, payload: &str) -> (Value, String) {
    let out = dir.join(format!("{function}.out"));
    let printed = control.aws_json(&[
        "invoke",
        "--function-name",
        function,
        "--payload",
        payload,
        out.to_str().unwrap(),
    ]);
    (printed, std::fs::read_to_string(&out).unwrap_or_default())
}

/// The error object of a function error, checked to be one.
fn function_error(printed: &Value, body: &str) -> Value {
    assert_eq!(printed["FunctionError"], "Unhandled", "{printed} {body}");
    serde_json::from_str(body).expect("Lambda's error object")
}

#[test]
fn every_example_runs_through_control_with_its_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(&dir.path().join("data"), &[]);
    let _worker = Worker::start(&control, &dir.path().join("worker"));
    for (name, module) in [
        ("echo", ember_examples::ECHO),
        ("echo-reactor", ember_examples::ECHO_REACTOR),
        ("json-transform", ember_examples::JSON_TRANSFORM),
        ("sha-heavy", ember_examples::SHA_HEAVY),
        ("oom", ember_examples::OOM),
        ("init-trap", ember_examples::INIT_TRAP),
    ] {
        create(&control, dir.path(), name, module, "30");
    }

    // A command module and a reactor echo the event unchanged.
    for echo in ["echo", "echo-reactor"] {
        let (printed, body) = invoke(&control, dir.path(), echo, r#"{"a":[1,2,3]}"#);
        assert_eq!(body, r#"{"a":[1,2,3]}"#, "{printed}");
    }

    let (_, body) = invoke(
        &control,
        dir.path(),
        "json-transform",
        r#"{"items":[{"name":"a","price":1.5,"qty":2},{"name":"b","price":2.0,"qty":1}]}"#,
    );
    let totals: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(totals["count"], 2, "{body}");
    assert_eq!(totals["total"], 5.0, "{body}");
    let (printed, body) = invoke(&control, dir.path(), "json-transform", "[]");
    assert_eq!(
        function_error(&printed, &body)["errorType"],
        "Runtime.ExitError"
    );

    // The guest computes what the host computes.
    let (_, body) = invoke(&control, dir.path(), "sha-heavy", r#"{"mib":1}"#);
    let digest: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        digest["sha256"],
        ember_examples::digest_pattern(1),
        "{body}"
    );

    let (printed, body) = invoke(&control, dir.path(), "oom", "{}");
    assert_eq!(
        function_error(&printed, &body)["errorType"],
        "Runtime.OutOfMemory"
    );
    let (printed, body) = invoke(&control, dir.path(), "init-trap", "{}");
    assert_eq!(
        function_error(&printed, &body)["errorType"],
        "Runtime.InitError"
    );
}
