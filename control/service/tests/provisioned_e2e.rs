//! Provisioned concurrency end to end: the real `ember-control` places configurations on
//! real `emberd` workers running real micro-VMs (KVM required), which keep initialized
//! environments; the stock AWS CLI and boto3 configure and watch it.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use base64::Engine;
use ember_testkit::worker::Worker;
use ember_testkit::{write_packages, zip, Control};
use serde_json::Value;

/// How long a configuration may take to become READY.
const READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Control with heartbeats fast enough for the tests to see a worker die.
fn control(dir: &Path) -> Control {
    Control::start_with(&dir.join("data"), &["--heartbeat-ms", "200"])
}

/// Creates `name` from `package` and publishes version 1.
fn create_and_publish(control: &Control, dir: &Path, name: &str, package: &str) {
    control.create_function(name, &dir.join(package), &[]);
    let published = control.aws_json(&["publish-version", "--function-name", name]);
    assert_eq!(published["Version"], "1");
}

fn put(control: &Control, name: &str, count: u32) -> Value {
    control.aws_json(&[
        "put-provisioned-concurrency-config",
        "--function-name",
        name,
        "--qualifier",
        "1",
        "--provisioned-concurrent-executions",
        &count.to_string(),
    ])
}

fn get(control: &Control, name: &str, qualifier: &str) -> Value {
    control.aws_json(&[
        "get-provisioned-concurrency-config",
        "--function-name",
        name,
        "--qualifier",
        qualifier,
    ])
}

/// Polls the configuration of `name:1` until `done` holds; fails after [`READY_TIMEOUT`].
fn wait_for(control: &Control, name: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    wait_for_qualified(control, name, "1", what, done)
}

/// Polls the configuration of `name:qualifier` until `done` holds; fails after
/// [`READY_TIMEOUT`].
fn wait_for_qualified(
    control: &Control,
    name: &str,
    qualifier: &str,
    what: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let started = Instant::now();
    loop {
        let got = get(control, name, qualifier);
        if done(&got) {
            return got;
        }
        assert!(
            started.elapsed() < READY_TIMEOUT,
            "{what} not reached within {READY_TIMEOUT:?}: {got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn ready(control: &Control, name: &str, count: u32) -> Value {
    wait_for(control, name, "READY", |got| {
        got["Status"] == "READY" && got["AllocatedProvisionedConcurrentExecutions"] == count
    })
}

/// Invokes `name[:qualifier]` with `LogType: Tail`: the response body and Lambda's
/// `REPORT` line from the log tail.
fn invoke(control: &Control, dir: &Path, name: &str, qualifier: Option<&str>) -> (String, String) {
    let out = dir.join("response.json");
    let mut args = vec!["invoke", "--function-name", name, "--log-type", "Tail"];
    if let Some(qualifier) = qualifier {
        args.extend(["--qualifier", qualifier]);
    }
    args.push(out.to_str().unwrap());
    let printed = control.aws_json(&args);
    let tail = base64::engine::general_purpose::STANDARD
        .decode(printed["LogResult"].as_str().expect("a log tail"))
        .unwrap();
    let tail = String::from_utf8(tail).unwrap();
    let report = tail
        .lines()
        .find(|line| line.starts_with("REPORT RequestId: "))
        .unwrap_or_else(|| panic!("no REPORT line in the log tail: {tail}"))
        .to_owned();
    (std::fs::read_to_string(&out).unwrap(), report)
}

fn cold(report: &str) -> bool {
    report.contains("\tInit Duration: ")
}

#[test]
fn provisioned_environments_are_placed_warm_and_released() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(dir.path());
    write_packages(dir.path());
    create_and_publish(&control, dir.path(), "hello", "hello.zip");

    // No worker: nowhere to place it.
    let put = put(&control, "hello", 2);
    assert_eq!(put["RequestedProvisionedConcurrentExecutions"], 2);
    let failed = wait_for(&control, "hello", "FAILED", |got| got["Status"] == "FAILED");
    assert_eq!(failed["AllocatedProvisionedConcurrentExecutions"], 0);
    let reason = failed["StatusReason"].as_str().expect("a StatusReason");
    assert!(reason.contains("2 of 2"), "{reason}");

    // A worker joins: the configuration is placed there and becomes READY.
    let _worker = Worker::start(&control, &dir.path().join("worker"));
    let got = ready(&control, "hello", 2);
    assert_eq!(got["AvailableProvisionedConcurrentExecutions"], 2);
    assert!(got.get("StatusReason").is_none(), "{got}");
    let listed = control.aws_json(&[
        "list-provisioned-concurrency-configs",
        "--function-name",
        "hello",
    ]);
    let configs = listed["ProvisionedConcurrencyConfigs"].as_array().unwrap();
    assert_eq!(configs.len(), 1);
    assert_eq!(configs[0]["Status"], "READY");
    assert_eq!(configs[0]["AllocatedProvisionedConcurrentExecutions"], 2);
    assert!(configs[0]["FunctionArn"]
        .as_str()
        .unwrap()
        .ends_with(":function:hello:1"));

    // The first invocation of the version is warm: no init phase in its REPORT.
    let (body, report) = invoke(&control, dir.path(), "hello", Some("1"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["message"], "Hello, world!");
    assert!(
        !cold(&report),
        "a provisioned version started cold: {report}"
    );
    // $LATEST is not provisioned: its first invocation is a cold start.
    let (_, report) = invoke(&control, dir.path(), "hello", None);
    assert!(
        cold(&report),
        "an unprovisioned version started warm: {report}"
    );

    // Deleted, the configuration's environments are shut down: the next invocation of
    // the version finds none idle and starts cold.
    control.aws_json(&[
        "delete-provisioned-concurrency-config",
        "--function-name",
        "hello",
        "--qualifier",
        "1",
    ]);
    let started = Instant::now();
    loop {
        let (_, report) = invoke(&control, dir.path(), "hello", Some("1"));
        if cold(&report) {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the provisioned environments were not released: {report}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn shares_spread_over_workers_and_move_off_a_dead_one() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(dir.path());
    write_packages(dir.path());
    let mut first = Worker::start(&control, &dir.path().join("first"));
    let _second = Worker::start(&control, &dir.path().join("second"));
    create_and_publish(&control, dir.path(), "counter", "counter.zip");
    put(&control, "counter", 2);
    ready(&control, "counter", 2);

    // Watch through boto3 as the worker dies: one environment each means the allocation
    // drops to 1 (not 0: spread), then the survivor takes the share and it is READY
    // again with 2.
    let mut python = control.boto3("provisioned_poll_boto3.py", &control.credentials());
    python
        .arg(&control.endpoint)
        .arg(control.ca())
        .arg(control.credentials())
        .args(["counter", "1", "30"])
        .stdout(Stdio::piped());
    let mut watcher = python.spawn().expect("run python3");
    let mut lines = BufReader::new(watcher.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "polling");
    first.kill();
    let seen: Vec<String> = lines.map(Result::unwrap).collect();
    let status = watcher.wait().unwrap();
    assert!(status.success(), "{status}: {seen:?}");
    let allocated: Vec<u32> = seen
        .iter()
        .map(|line| line.split(' ').next().unwrap().parse().unwrap())
        .collect();
    assert_eq!(allocated.first(), Some(&2), "{seen:?}");
    assert_eq!(allocated.iter().min(), Some(&1), "not spread: {seen:?}");
    assert_eq!(seen.last().unwrap(), "2 2 READY", "{seen:?}");

    // Both environments are now on the survivor: the version is still warm there.
    let (body, report) = invoke(&control, dir.path(), "counter", Some("1"));
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(body["count"], 1, "a used environment: {body}");
    assert!(!cold(&report), "{report}");
}

/// Whether a configuration is `FAILED` because its version's init phase fails.
fn init_failed(got: &Value) -> bool {
    got["Status"] == "FAILED"
        && got["StatusReason"]
            .as_str()
            .is_some_and(|reason| reason.starts_with("FUNCTION_ERROR_INIT_FAILED"))
}

#[test]
fn a_version_whose_init_fails_reports_failed_until_the_alias_moves_on() {
    let dir = tempfile::tempdir().unwrap();
    let control = control(dir.path());
    write_packages(dir.path());
    let package = dir.path().join("init-trap.zip");
    std::fs::write(&package, zip(&[("f.wasm", ember_examples::INIT_TRAP)])).unwrap();
    let _worker = Worker::start(&control, &dir.path().join("worker"));
    create_and_publish(&control, dir.path(), "init-trap", "init-trap.zip");

    // The worker that holds the share cannot initialize the version: FAILED, with the
    // init phase's error (its `_initialize` traps), not IN_PROGRESS forever.
    put(&control, "init-trap", 1);
    let failed = wait_for(&control, "init-trap", "FAILED", init_failed);
    assert_eq!(failed["AllocatedProvisionedConcurrentExecutions"], 0);
    assert_eq!(failed["AvailableProvisionedConcurrentExecutions"], 0);
    let reason = failed["StatusReason"].as_str().unwrap();
    assert!(
        reason.contains("init error") && reason.contains("unreachable"),
        "{reason}"
    );
    let listed = control.aws_json(&[
        "list-provisioned-concurrency-configs",
        "--function-name",
        "init-trap",
    ]);
    let configs = listed["ProvisionedConcurrencyConfigs"].as_array().unwrap();
    assert!(init_failed(&configs[0]), "{listed}");
    control.aws_json(&[
        "delete-provisioned-concurrency-config",
        "--function-name",
        "init-trap",
        "--qualifier",
        "1",
    ]);

    // Through an alias: FAILED while it routes to the failing version, READY once it
    // routes to a version that initializes.
    control.aws_json(&[
        "create-alias",
        "--function-name",
        "init-trap",
        "--name",
        "live",
        "--function-version",
        "1",
    ]);
    control.aws_json(&[
        "put-provisioned-concurrency-config",
        "--function-name",
        "init-trap",
        "--qualifier",
        "live",
        "--provisioned-concurrent-executions",
        "1",
    ]);
    wait_for_qualified(&control, "init-trap", "live", "FAILED", init_failed);
    let hello = format!("fileb://{}", dir.path().join("hello.zip").display());
    control.aws_json(&[
        "update-function-code",
        "--function-name",
        "init-trap",
        "--zip-file",
        &hello,
    ]);
    let published = control.aws_json(&["publish-version", "--function-name", "init-trap"]);
    assert_eq!(published["Version"], "2");
    control.aws_json(&[
        "update-alias",
        "--function-name",
        "init-trap",
        "--name",
        "live",
        "--function-version",
        "2",
    ]);
    let got = wait_for_qualified(&control, "init-trap", "live", "READY", |got| {
        got["Status"] == "READY"
    });
    assert_eq!(got["AllocatedProvisionedConcurrentExecutions"], 1);
    assert!(got.get("StatusReason").is_none(), "{got}");
}
