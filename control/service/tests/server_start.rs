//! `ember-control serve` as an operator meets it: the first start makes a local CA, an
//! admin account and a credentials file the stock AWS CLI uses as they are; restarts reuse
//! them; accounts can be added while it runs; it speaks HTTPS only and stops cleanly on
//! SIGTERM.

use std::fs;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ember_testkit::{aws_error, Control};

fn mode(path: &Path) -> u32 {
    fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// The access key id in a credentials file.
fn key_id(credentials: &Path) -> String {
    let text = fs::read_to_string(credentials).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("aws_access_key_id = "))
        .unwrap_or_else(|| panic!("no key in {text}"))
        .to_owned()
}

#[test]
fn first_start_makes_what_the_aws_cli_needs_and_restarts_reuse_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = Control::start(&data);

    let credentials = control.credentials();
    assert_eq!(mode(&credentials), 0o600);
    let text = fs::read_to_string(&credentials).unwrap();
    assert!(
        text.starts_with("# ember account admin\n[ember]\naws_account_id = "),
        "{text}"
    );
    let key = key_id(&credentials);
    assert!(key.starts_with("AKIA") && key.len() == 20, "{key}");
    let ca = fs::read_to_string(control.ca()).unwrap();
    assert!(ca.starts_with("-----BEGIN CERTIFICATE-----"), "{ca}");
    assert_eq!(mode(&data.join("tls")), 0o700);
    assert_eq!(mode(&data.join("tls/ca.key")), 0o600);
    assert_eq!(mode(&data.join("tls/server.key")), 0o600);

    // The stock CLI with nothing but the two files: authenticated, and a route the API does
    // not have answers as Lambda does.
    let listed = control.aws_json(&["list-functions"]);
    assert_eq!(listed["Functions"], serde_json::json!([]));
    let out = control.aws(&["list-layers"]);
    assert_eq!(aws_error(&out), "UnknownOperationException");

    control.kill();
    let control = Control::start(&data);
    assert_eq!(fs::read_to_string(control.ca()).unwrap(), ca);
    assert_eq!(fs::read_to_string(control.credentials()).unwrap(), text);
    control.aws_json(&["list-functions"]);
}

#[test]
fn accounts_can_be_added_while_it_serves() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(&dir.path().join("data"));
    let credentials = control.add_account("team", dir.path());
    let text = fs::read_to_string(&credentials).unwrap();
    assert!(text.contains("\n[team]\n"), "{text}");
    let out = control.aws_with(&credentials, "team", &["list-functions"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let again = Command::new(ember_testkit::binaries::binary(
        "ember-control",
        "ember-control",
    ))
    .args(["account", "create", "team", "--data-dir"])
    .arg(&control.data_dir)
    .output()
    .unwrap();
    assert!(!again.status.success());
    let stderr = String::from_utf8_lossy(&again.stderr);
    assert!(
        stderr.contains("an account named \"team\" exists already"),
        "{stderr}"
    );
    assert!(again.stdout.is_empty());
}

#[test]
fn speaks_https_only() {
    let dir = tempfile::tempdir().unwrap();
    let control = Control::start(&dir.path().join("data"));
    let plain = control.endpoint.replace("https://", "http://");
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let reply = client.get(format!("{plain}/2015-03-31/functions")).send();
    assert!(reply.is_err(), "plain HTTP was answered: {reply:?}");
    // The service is still there for HTTPS.
    control.aws_json(&["list-functions"]);
}

/// A child process killed when the test ends, passed or not.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn stops_cleanly_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut guard = KillOnDrop(
        Command::new(ember_testkit::binaries::binary(
            "ember-control",
            "ember-control",
        ))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--fleet-listen", "127.0.0.1:0", "--metrics-listen", "off"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap(),
    );
    let child = &mut guard.0;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(
        line.starts_with("ember-control listening on https://127.0.0.1:"),
        "{line}"
    );
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > Duration::from_secs(20) {
            panic!("ember-control did not stop within 20 s of SIGTERM");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status}");
}
