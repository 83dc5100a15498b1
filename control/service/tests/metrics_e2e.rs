//! Prometheus metrics end to end: the real `ember-control` and a real `emberd` worker
//! (KVM required), invocations through the stock AWS CLI, and both `/metrics` listeners
//! scraped over plain HTTP. Every count is checked as the difference between two scrapes,
//! so the exact number of invocations of each kind shows.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Output;
use std::time::{Duration, Instant};

use ember_testkit::worker::Worker;
use ember_testkit::{aws_cli, aws_env, aws_error, write_packages, zip, Control};

/// The route label of Lambda's Invoke.
const INVOKE_ROUTE: &str = "POST /2015-03-31/functions/{function}/invocations";

/// One sample line: `name{labels} value`.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// A parsed `/metrics` page.
struct Scrape {
    content_type: String,
    text: String,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample `name` with exactly `labels`; 0 when there is none (a
    /// labelled series appears with its first count).
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let labels: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut found = self
            .samples
            .iter()
            .filter(|s| s.name == name && s.labels == labels);
        let value = found.next().map_or(0.0, |s| s.value);
        assert!(found.next().is_none(), "{name} {labels:?} appears twice");
        value
    }

    fn has(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.samples.iter().any(|s| {
            s.name == name
                && s.labels.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(v))
        })
    }
}

/// `GET ENDPOINT/metrics` with plain HTTP, asking for OpenMetrics or not.
fn scrape(endpoint: &str, openmetrics: bool) -> Scrape {
    assert!(endpoint.starts_with("http://127.0.0.1:"), "{endpoint}");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let mut request = client.get(format!("{endpoint}/metrics"));
    if openmetrics {
        request = request.header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        );
    }
    let response = request.send().expect("scrape /metrics");
    assert_eq!(response.status(), 200);
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = response.text().unwrap();
    let samples = text
        .lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| parse_sample(line).unwrap_or_else(|| panic!("not a sample: {line:?}")))
        .collect();
    Scrape {
        content_type,
        text,
        samples,
    }
}

/// Parses `name{key="value",…} value` (label values may hold escaped quotes, commas and
/// braces).
fn parse_sample(line: &str) -> Option<Sample> {
    let is_name_char = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let name_end = line.find(|c| !is_name_char(c))?;
    let (name, mut rest) = line.split_at(name_end);
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    let mut labels = BTreeMap::new();
    if let Some(inside) = rest.strip_prefix('{') {
        rest = inside;
        while !rest.starts_with('}') {
            let (key, after) = rest.split_once("=\"")?;
            if key.is_empty() || !key.chars().all(is_name_char) {
                return None;
            }
            let (value, used) = quoted(after)?;
            labels.insert(key.to_owned(), value);
            rest = &after[used..];
            rest = rest.strip_prefix(',').unwrap_or(rest);
        }
        rest = &rest[1..];
    }
    let value = rest.strip_prefix(' ')?.parse().ok()?;
    Some(Sample {
        name: name.to_owned(),
        labels,
        value,
    })
}

/// A label value up to its closing quote, unescaped, and the bytes it took with the quote.
fn quoted(text: &str) -> Option<(String, usize)> {
    let mut value = String::new();
    let mut chars = text.char_indices();
    loop {
        match chars.next()? {
            (i, '"') => return Some((value, i + 1)),
            (_, '\\') => match chars.next()?.1 {
                'n' => value.push('\n'),
                c => value.push(c),
            },
            (_, c) => value.push(c),
        }
    }
}

/// `aws lambda ARGS…` sent exactly once: the CLI retries throttles by default, and each
/// retry would count.
fn aws_once(control: &Control, args: &[&str]) -> Output {
    let mut command = aws_cli();
    command
        .args([
            "--profile",
            "ember",
            "--region",
            "local",
            "--output",
            "json",
        ])
        .args(["--endpoint-url", &control.endpoint, "lambda"])
        .args(args);
    aws_env(&mut command, &control.credentials(), &control.ca());
    command.env("AWS_MAX_ATTEMPTS", "1");
    command.output().expect("run aws")
}

fn invoke(control: &Control, dir: &Path, function: &str) -> Output {
    let out = dir.join("response.json");
    aws_once(
        control,
        &["invoke", "--function-name", function, out.to_str().unwrap()],
    )
}

fn create(control: &Control, dir: &Path, name: &str, package: &str) {
    control.create_function(name, &dir.join(package), &[]);
}

/// Scrapes until `done` holds, for up to 20 s.
fn scrape_until(endpoint: &str, what: &str, done: impl Fn(&Scrape) -> bool) -> Scrape {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let scrape = scrape(endpoint, false);
        if done(&scrape) {
            return scrape;
        }
        assert!(
            Instant::now() < deadline,
            "{what}; last scrape:\n{}",
            scrape.text
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn both_services_count_invocations_for_prometheus() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start_with(&dir.path().join("data"), &["--heartbeat-ms", "200"]);
    let mut worker = Worker::start(&control, &dir.path().join("worker"));
    write_packages(dir.path());
    let trap = zip(&[("trap.wasm", ember_examples::TRAP)]);
    std::fs::write(dir.path().join("trap.zip"), trap).unwrap();
    create(&control, dir.path(), "hello", "hello.zip");
    create(&control, dir.path(), "trap", "trap.zip");
    create(&control, dir.path(), "capped", "hello.zip");
    control.aws_json(&[
        "put-function-concurrency",
        "--function-name",
        "capped",
        "--reserved-concurrent-executions",
        "0",
    ]);
    let credentials = std::fs::read_to_string(control.credentials()).unwrap();
    let account = credentials
        .lines()
        .find_map(|line| line.strip_prefix("aws_account_id = "))
        .unwrap();

    let control_before = scrape(&control.metrics_endpoint, false);
    let worker_before = scrape(&worker.metrics_endpoint, false);
    assert_eq!(
        control_before.value("ember_control_workers", &[("state", "active")]),
        1.0,
        "{}",
        control_before.text
    );
    assert_eq!(
        control_before.value("ember_control_workers", &[("state", "dead")]),
        0.0
    );

    // One success (a cold start), one function error (another), one throttle, one
    // unknown function, then the success again on its warm environment.
    let ok = invoke(&control, dir.path(), "hello");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let failed = invoke(&control, dir.path(), "trap");
    assert!(failed.status.success());
    assert!(String::from_utf8_lossy(&failed.stdout).contains("Unhandled"));
    assert_eq!(
        aws_error(&invoke(&control, dir.path(), "capped")),
        "TooManyRequestsException"
    );
    assert_eq!(
        aws_error(&invoke(&control, dir.path(), "no-such-function")),
        "ResourceNotFoundException"
    );
    let warm = invoke(&control, dir.path(), "hello");
    assert!(warm.status.success());

    let after = scrape(&control.metrics_endpoint, false);
    let moved = |name: &str, labels: &[(&str, &str)]| {
        after.value(name, labels) - control_before.value(name, labels)
    };
    let invocations = "ember_control_invocations_total";
    let outcome = |function, outcome| {
        [
            ("account", account),
            ("function", function),
            ("outcome", outcome),
        ]
    };
    assert_eq!(moved(invocations, &outcome("hello", "success")), 2.0);
    assert_eq!(moved(invocations, &outcome("trap", "function_error")), 1.0);
    assert_eq!(moved(invocations, &outcome("capped", "throttled")), 1.0);
    // Names that do not exist are counted without the name.
    assert_eq!(moved(invocations, &outcome("", "not_found")), 1.0);
    assert!(!after.text.contains("no-such-function"));
    let function = |function| [("account", account), ("function", function)];
    assert_eq!(
        moved("ember_control_throttles_total", &function("capped")),
        1.0
    );
    assert_eq!(
        moved("ember_control_throttles_total", &function("hello")),
        0.0
    );
    assert_eq!(
        moved("ember_control_cold_starts_total", &function("hello")),
        1.0
    );
    assert_eq!(
        moved("ember_control_cold_starts_total", &function("trap")),
        1.0
    );
    // Timed: the invocations that reached a worker.
    let duration = "ember_control_invocation_duration_seconds";
    let hello = function("hello");
    assert_eq!(moved(&format!("{duration}_count"), &hello), 2.0);
    assert_eq!(
        moved(&format!("{duration}_count"), &function("capped")),
        0.0
    );
    let every_bucket = [hello[0], hello[1], ("le", "+Inf")];
    assert_eq!(moved(&format!("{duration}_bucket"), &every_bucket), 2.0);
    assert!(moved(&format!("{duration}_sum"), &hello) > 0.0);
    let requests = "ember_control_http_requests_total";
    let route = |status| [("operation", INVOKE_ROUTE), ("status", status)];
    assert_eq!(moved(requests, &route("200")), 3.0);
    assert_eq!(moved(requests, &route("429")), 1.0);
    assert_eq!(moved(requests, &route("404")), 1.0);

    // The worker saw the two that reached it: the success twice, the trap once.
    let worker_after = scrape(&worker.metrics_endpoint, false);
    let worker_moved = |name: &str, labels: &[(&str, &str)]| {
        worker_after.value(name, labels) - worker_before.value(name, labels)
    };
    let runs = "emberd_invocations_total";
    assert_eq!(worker_moved(runs, &[("outcome", "success")]), 2.0);
    assert_eq!(worker_moved(runs, &[("outcome", "function_error")]), 1.0);
    assert_eq!(worker_moved(runs, &[("outcome", "service_error")]), 0.0);
    assert_eq!(
        worker_moved(
            "emberd_invocation_errors_total",
            &[("error_type", "Runtime.Trap")]
        ),
        1.0,
        "{}",
        worker_after.text
    );
    assert_eq!(worker_moved("emberd_cold_starts_total", &[]), 2.0);
    assert_eq!(
        worker_moved("emberd_invocation_duration_seconds_count", &[]),
        3.0
    );
    assert_eq!(worker_moved("emberd_init_duration_seconds_count", &[]), 2.0);
    // hello's environment waits for the next invocation; trap's (a reactor, whose state
    // is unknown after a trap) was shut down.
    assert_eq!(
        worker_after.value("emberd_environments", &[("state", "idle")]),
        1.0
    );
    assert_eq!(
        worker_after.value("emberd_environments", &[("state", "busy")]),
        0.0
    );
    assert_eq!(worker_after.value("emberd_in_flight", &[]), 0.0);
    assert_eq!(worker_after.value("emberd_draining", &[]), 0.0);
    // Spares of the functions' memory size are warmed after the first cold start.
    scrape_until(&worker.metrics_endpoint, "no spare VMs of 128 MiB", |s| {
        s.value("emberd_spare_vms", &[("memory_mib", "128")]) > 0.0
    });

    // The format a scraper asks for, with its content type.
    assert_eq!(
        after.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    for endpoint in [&control.metrics_endpoint, &worker.metrics_endpoint] {
        let open = scrape(endpoint, true);
        assert_eq!(
            open.content_type,
            "application/openmetrics-text; version=1.0.0; charset=utf-8"
        );
        assert!(open.text.ends_with("# EOF\n"), "{}", open.text);
        assert!(open.text.contains("# UNIT "), "{}", open.text);
        assert!(!open.samples.is_empty());
    }
    let missing = reqwest::blocking::get(format!("{}/other", control.metrics_endpoint)).unwrap();
    assert_eq!(missing.status(), 404);

    // The workers gauge is read when scraped: a killed worker turns dead.
    worker.kill();
    let dead = scrape_until(
        &control.metrics_endpoint,
        "the worker never turned dead",
        |s| s.value("ember_control_workers", &[("state", "dead")]) == 1.0,
    );
    assert_eq!(
        dead.value("ember_control_workers", &[("state", "active")]),
        0.0
    );
    assert!(dead.has("ember_control_workers", &[("state", "draining")]));
}
