//! `ember up`, the README's quick start, as a user runs it: the whole platform from an
//! empty data directory, the example deployed and invoked, the `ember` CLI and the real
//! AWS CLI pointed at it, Ctrl-C, and a second run on the same directory. Needs /dev/kvm.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_testkit::{aws_cli, aws_env, stdout_lines};

/// `ember up` to its "Try it" line: the whole platform up and the example run.
const UP_TIMEOUT: Duration = Duration::from_secs(120);

struct Up {
    child: Child,
    /// Everything printed up to and including the usage lines.
    printed: String,
    endpoint: String,
    /// Control's `/metrics`.
    metrics: String,
}

fn up(dir: &Path) -> Up {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["up", "--data-dir"])
        .arg(dir.join("data"))
        .args(["--listen", "127.0.0.1:0", "--fleet-listen", "127.0.0.1:0"])
        .args([
            "--metrics-listen",
            "127.0.0.1:0",
            "--worker-metrics-listen",
            "off",
        ])
        .env("EMBER_CONFIG", dir.join("config.json"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start ember up");
    let rx = stdout_lines(&mut child);
    let deadline = Instant::now() + UP_TIMEOUT;
    let mut printed = String::new();
    let mut endpoint = None;
    let mut metrics = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            let _ = child.kill();
            panic!("ember up did not finish starting within {UP_TIMEOUT:?}:\n{printed}");
        };
        printed.push_str(&line);
        printed.push('\n');
        if let Some(rest) = line.split_once("control on ").map(|(_, rest)| rest) {
            endpoint = rest.split(',').next().map(str::to_owned);
        }
        if let Some(url) = line.strip_prefix("metrics on ") {
            metrics = Some(url.to_owned());
        }
        if line.contains("lambda list-functions") {
            break;
        }
    }
    Up {
        child,
        printed,
        endpoint: endpoint.expect("ember up names its endpoint"),
        metrics: metrics.expect("ember up names its metrics endpoint"),
    }
}

/// SIGINT, as Ctrl-C; `ember up` must stop cleanly.
fn interrupt(mut up: Up) {
    let sent = Command::new("kill")
        .args(["-INT", &up.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = up.child.try_wait().unwrap() {
            assert!(status.success(), "ember up exited with {status}");
            return;
        }
        assert!(Instant::now() < deadline, "ember up ignored Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn ember_up_runs_the_platform_and_the_example_and_restarts_on_its_data() {
    assert!(
        Path::new("/dev/kvm").exists(),
        "/dev/kvm is missing: ember up runs micro-VMs"
    );
    let dir = tempfile::tempdir().unwrap();
    let first = up(dir.path());
    assert!(
        first
            .printed
            .contains("deployed the example function `hello`"),
        "{}",
        first.printed
    );
    assert_eq!(
        first
            .printed
            .matches(r#"{"message":"Hello, ember!"}"#)
            .count(),
        2,
        "the example is invoked cold and warm:\n{}",
        first.printed
    );

    // The CLI was configured for it.
    let out = Command::new(env!("CARGO_BIN_EXE_ember"))
        .args(["invoke", "hello", "--payload", r#"{"name":"you"}"#])
        .env("EMBER_CONFIG", dir.path().join("config.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        r#"{"message":"Hello, you!"}"#
    );

    // And the stock AWS CLI works with the data directory's files.
    let data = dir.path().join("data");
    let mut aws = aws_cli();
    aws_env(&mut aws, &data.join("credentials"), &data.join("ca.pem"));
    let out = aws
        .args(["--profile", "ember", "--region", "local", "--endpoint-url"])
        .arg(&first.endpoint)
        .args(["lambda", "invoke", "--function-name", "hello"])
        .args(["--payload", r#"{"name":"aws"}"#])
        .arg(dir.path().join("response.json"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("response.json")).unwrap(),
        r#"{"message":"Hello, aws!"}"#
    );
    // Control's metrics counted the example's invocations (cold and warm, the CLI's, the
    // AWS CLI's).
    let scraped = reqwest::blocking::get(&first.metrics)
        .and_then(|response| response.text())
        .expect("scrape /metrics");
    let hello_successes = scraped
        .lines()
        .find(|line| {
            line.starts_with("ember_control_invocations_total{")
                && line.contains(r#"function="hello""#)
                && line.contains(r#"outcome="success""#)
        })
        .unwrap_or_else(|| panic!("no invocations of hello in:\n{scraped}"));
    assert!(hello_successes.ends_with(" 4"), "{hello_successes}");
    interrupt(first);

    // A second run reuses everything: no new deployment, same function, same keys.
    let second = up(dir.path());
    assert!(
        !second.printed.contains("deployed"),
        "the example exists already:\n{}",
        second.printed
    );
    assert_eq!(
        second
            .printed
            .matches(r#"{"message":"Hello, ember!"}"#)
            .count(),
        2,
        "{}",
        second.printed
    );
    interrupt(second);
}
