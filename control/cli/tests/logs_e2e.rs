//! Function logs end to end: a real `ember-control`, a real `emberd` worker running real
//! micro-VMs (KVM required), invocations through the stock AWS CLI, and the logs read back
//! with `ember logs` (also `--follow`), `aws logs filter-log-events`, `describe-log-streams`
//! and `get-log-events`.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use ember_testkit::worker::Worker;
use ember_testkit::{aws_error, stdout_lines, write_packages, Control};
use serde_json::Value;

/// How long stored logs may take to become readable.
const VISIBLE_WITHIN: Duration = Duration::from_secs(20);

/// `aws logs ARGS…` as `profile` from `credentials`.
fn aws_logs(control: &Control, credentials: &Path, profile: &str, args: &[&str]) -> Output {
    control.aws_service("logs", credentials, profile, args)
}

fn aws_logs_json(control: &Control, args: &[&str]) -> Value {
    let out = aws_logs(control, &control.credentials(), "ember", args);
    assert!(
        out.status.success(),
        "aws logs {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("aws printed JSON")
}

/// Invokes `hello` with LogType Tail; returns the decoded log tail.
fn invoke_hello(control: &Control, dir: &Path, name: &str) -> String {
    let printed = control.aws_json(&[
        "invoke",
        "--function-name",
        "hello",
        "--payload",
        &format!(r#"{{"name":"{name}"}}"#),
        "--log-type",
        "Tail",
        dir.join("response.json").to_str().unwrap(),
    ]);
    let tail = base64::engine::general_purpose::STANDARD
        .decode(printed["LogResult"].as_str().expect("a LogResult"))
        .unwrap();
    String::from_utf8(tail).unwrap()
}

/// The request id in a log's `START` line.
fn request_id(log: &str) -> String {
    log.lines()
        .find_map(|line| line.strip_prefix("START RequestId: "))
        .and_then(|rest| rest.split_once(' '))
        .map(|(id, _)| id.to_owned())
        .unwrap_or_else(|| panic!("no START line in {log:?}"))
}

/// An `ember` command with its configuration in `home` (see [`configure`]).
fn ember(home: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_ember"));
    command
        .args(args)
        .env("HOME", home)
        .env("EMBER_CONFIG", home.join("config.json"));
    for var in [
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_SHARED_CREDENTIALS_FILE",
        "EMBER_ENDPOINT",
        "EMBER_REGION",
        "EMBER_PROFILE",
        "EMBER_CA",
    ] {
        command.env_remove(var);
    }
    command
}

/// Points `ember` in `home` at `control`, as its admin account.
fn configure(control: &Control, home: &Path) {
    std::fs::create_dir_all(home).unwrap();
    let out = ember(
        home,
        &[
            "configure",
            "--endpoint",
            &control.endpoint,
            "--from-data-dir",
        ],
    )
    .arg(&control.data_dir)
    .output()
    .unwrap();
    assert!(
        out.status.success(),
        "ember configure: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The messages of `ember logs hello --output json` (one JSON event a line) that mention
/// `id`, once there are `count` of them.
fn ember_logs_for(home: &Path, id: &str, count: usize) -> Vec<String> {
    let deadline = Instant::now() + VISIBLE_WITHIN;
    loop {
        let out = ember(home, &["logs", "hello", "--output", "json"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ember logs failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let events: Vec<Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        let mut messages = Vec::new();
        let mut inside = false;
        for event in &events {
            let message = event["message"].as_str().unwrap().to_owned();
            if message == format!("START RequestId: {id} Version: $LATEST") {
                inside = true;
            }
            let ours = message.contains(id);
            if inside || ours {
                messages.push(message.clone());
            }
            if message.starts_with(&format!("REPORT RequestId: {id}")) {
                inside = false;
            }
        }
        if messages.len() >= count {
            return messages;
        }
        assert!(
            Instant::now() < deadline,
            "ember logs showed {messages:?} for {id} within {VISIBLE_WITHIN:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn logs_are_kept_and_read_with_ember_and_the_aws_cli() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start_with(&dir.path().join("data"), &["--heartbeat-ms", "200"]);
    let _worker = Worker::start(&control, &dir.path().join("worker"));
    write_packages(dir.path());
    let zip = format!("fileb://{}", dir.path().join("hello.zip").display());
    control.aws_json(&[
        "create-function",
        "--function-name",
        "hello",
        "--runtime",
        "wasm32-wasip1",
        "--role",
        &control.role(),
        "--zip-file",
        &zip,
    ]);

    // LogType Tail is the end of the formatted log; Init Duration only on the cold start.
    let cold = invoke_hello(&control, dir.path(), "Ada");
    let cold_id = request_id(&cold);
    let lines: Vec<&str> = cold.lines().collect();
    assert!(lines.contains(&"hello: greeting \"Ada\""), "{cold}");
    assert!(
        lines.contains(&format!("END RequestId: {cold_id}").as_str()),
        "{cold}"
    );
    let report = lines.last().unwrap();
    assert!(
        report.starts_with(&format!("REPORT RequestId: {cold_id}\tDuration: ")),
        "{cold}"
    );
    for field in [
        "Billed Duration: ",
        "Memory Size: 128 MB",
        "Max Memory Used: ",
        "Init Duration: ",
    ] {
        assert!(report.contains(field), "{field} missing in {report}");
    }
    let warm = invoke_hello(&control, dir.path(), "Grace");
    let warm_id = request_id(&warm);
    assert_ne!(warm_id, cold_id);
    assert!(warm.contains("hello: greeting \"Grace\""), "{warm}");
    let warm_report = warm.lines().last().unwrap();
    assert!(warm_report.starts_with("REPORT RequestId: "), "{warm}");
    assert!(!warm_report.contains("Init Duration"), "{warm_report}");

    // `ember logs`: START, the function's line, END, REPORT, in that order.
    let home = dir.path().join("home");
    configure(&control, &home);
    let messages = ember_logs_for(&home, &cold_id, 4);
    assert_eq!(
        messages[0],
        format!("START RequestId: {cold_id} Version: $LATEST")
    );
    assert!(
        messages.contains(&"hello: greeting \"Ada\"".to_owned()),
        "{messages:?}"
    );
    let end = messages.len() - 2;
    assert_eq!(messages[end], format!("END RequestId: {cold_id}"));
    assert!(messages[end + 1].contains("Init Duration"), "{messages:?}");
    ember_logs_for(&home, &warm_id, 4);

    // The stock AWS CLI: every event of the group, then only those matching a pattern.
    let all = aws_logs_json(
        &control,
        &["filter-log-events", "--log-group-name", "/aws/lambda/hello"],
    );
    let all_messages: Vec<&str> = all["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["message"].as_str().unwrap())
        .collect();
    for expected in [
        format!("START RequestId: {cold_id} Version: $LATEST"),
        "hello: greeting \"Ada\"".to_owned(),
        format!("END RequestId: {warm_id}"),
    ] {
        assert!(
            all_messages.contains(&expected.as_str()),
            "{expected}: {all_messages:?}"
        );
    }
    let matching = aws_logs_json(
        &control,
        &[
            "filter-log-events",
            "--log-group-name",
            "/aws/lambda/hello",
            "--filter-pattern",
            &warm_id,
        ],
    );
    let matching = matching["events"].as_array().unwrap();
    assert_eq!(matching.len(), 3, "{matching:?}");
    assert!(matching
        .iter()
        .all(|e| e["message"].as_str().unwrap().contains(&warm_id)));
    // Paging: one event a page still gives every event.
    let paged = aws_logs_json(
        &control,
        &[
            "filter-log-events",
            "--log-group-name",
            "/aws/lambda/hello",
            "--page-size",
            "1",
        ],
    );
    assert_eq!(paged["events"], all["events"]);

    // One stream per environment; get-log-events reads it from the start.
    let streams = aws_logs_json(
        &control,
        &[
            "describe-log-streams",
            "--log-group-name",
            "/aws/lambda/hello",
        ],
    );
    let streams = streams["logStreams"].as_array().unwrap();
    assert_eq!(streams.len(), 1, "{streams:?}");
    let stream = streams[0]["logStreamName"].as_str().unwrap();
    assert!(stream.contains("/[$LATEST]"), "{stream}");
    let events = aws_logs_json(
        &control,
        &[
            "get-log-events",
            "--log-group-name",
            "/aws/lambda/hello",
            "--log-stream-name",
            stream,
            "--start-from-head",
        ],
    );
    assert_eq!(
        events["events"][0]["message"],
        format!("START RequestId: {cold_id} Version: $LATEST")
    );

    // Another account sees no such group.
    let other = control.add_account("other", dir.path());
    let refused = aws_logs(
        &control,
        &other,
        "other",
        &["filter-log-events", "--log-group-name", "/aws/lambda/hello"],
    );
    assert_eq!(aws_error(&refused), "ResourceNotFoundException");
    let missing = aws_logs(
        &control,
        &control.credentials(),
        "ember",
        &[
            "filter-log-events",
            "--log-group-name",
            "/aws/lambda/absent",
        ],
    );
    assert_eq!(aws_error(&missing), "ResourceNotFoundException");

    // `ember logs --follow` prints an invocation made after it started.
    let mut follow = ember(&home, &["logs", "hello", "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let rx = stdout_lines(&mut follow);
    // It first prints what is there already, up to the warm invocation's REPORT.
    let warm_report = format!("REPORT RequestId: {warm_id}");
    loop {
        let line = rx
            .recv_timeout(VISIBLE_WITHIN)
            .expect("ember logs --follow did not print the earlier invocations");
        if line.contains(&warm_report) {
            break;
        }
    }
    let later = invoke_hello(&control, dir.path(), "Follow");
    let later_id = request_id(&later);
    let deadline = Instant::now() + VISIBLE_WITHIN;
    let mut printed = Vec::new();
    while !printed
        .iter()
        .any(|l: &String| l.contains(&format!("REPORT RequestId: {later_id}")))
    {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => printed.push(line),
            Err(_) => {
                panic!("--follow did not print {later_id} within {VISIBLE_WITHIN:?}: {printed:?}")
            }
        }
    }
    let _ = follow.kill();
    let _ = follow.wait();
    assert!(
        printed
            .iter()
            .any(|l| l.ends_with("hello: greeting \"Follow\"")),
        "{printed:?}"
    );
    // Each event once: the earlier invocations are not printed again.
    assert!(!printed.iter().any(|l| l.contains(&cold_id)), "{printed:?}");
}
