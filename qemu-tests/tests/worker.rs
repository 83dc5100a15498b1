//! The worker image as a worker: booted under QEMU with a vsock device and nothing else,
//! it joins a real `ember-control` on the host over vsock (control's fleet listener on the
//! device's hybrid vsock socket), heartbeats, runs invocations made with the AWS CLI in
//! micro-VMs on the machine's own `/dev/kvm`, and powers the machine off when its lease
//! has ended. While control is unreachable, or refuses the image's token, it says so on
//! the console and keeps trying.

use base64::Engine;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use ember_testkit::{write_packages, Control};
use qemu_tests::image::Image;
use qemu_tests::qemu::{Machine, Qemu};
use qemu_tests::vsock::GUEST_CID;

/// The vsock port the image dials control on, and the one it serves the worker API on.
const CONTROL_PORT: &str = "9444";
const WORKER_PORT: &str = "9445";

/// From QEMU's start to the worker's first registration attempt: the kernel boots in
/// tens of seconds under TCG, on a shared machine maybe minutes.
const BOOT: Duration = Duration::from_secs(300);

/// The lease of the worker that powers off: long enough for an invocation and the
/// heartbeats watched after it, short enough not to keep the test waiting (it drains two
/// seconds before the end).
const LEASE_SECONDS: u64 = 40;

/// Control's heartbeat interval; a worker silent for three of them is dead.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// A control service that takes workers over vsock through the hybrid socket `uds`.
fn start_control(data_dir: &Path, uds: &Path, extra: &[&str]) -> Control {
    let heartbeat_ms = HEARTBEAT.as_millis().to_string();
    let mut args = vec![
        "--fleet-vsock-uds",
        uds.to_str().unwrap(),
        "--fleet-vsock-port",
        CONTROL_PORT,
        "--heartbeat-ms",
        &heartbeat_ms,
    ];
    args.extend_from_slice(extra);
    Control::start_with(data_dir, &args)
}

/// An image that joins `control` over vsock as `name` with the token in `token_file`.
fn worker_image(dir: &Path, control: &Control, token_file: &Path, name: &str) -> Image {
    let control_url = format!("vsock://2:{CONTROL_PORT}");
    let ca = control.ca();
    Image::build(
        dir,
        &[
            "--control",
            &control_url,
            "--ca",
            ca.to_str().unwrap(),
            "--token-file",
            token_file.to_str().unwrap(),
            "--vsock-port",
            WORKER_PORT,
            "--name",
            name,
        ],
    )
}

/// How many workers control counts in `state`, from its metrics.
fn workers(control: &Control, state: &str) -> u64 {
    let address = control
        .metrics_endpoint
        .strip_prefix("http://")
        .expect("plain HTTP metrics");
    let mut stream = TcpStream::connect(address).expect("connect to control's metrics");
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").unwrap();
    let mut page = String::new();
    stream.read_to_string(&mut page).unwrap();
    let series = format!("ember_control_workers{{state=\"{state}\"}} ");
    page.lines()
        .find_map(|line| line.strip_prefix(&series))
        .and_then(|value| value.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in control's metrics:\n{page}"))
}

/// Reads the console until `text` has appeared `times` times.
fn wait_for_times(qemu: &mut Qemu, text: &str, times: usize, timeout: Duration) -> Vec<String> {
    let deadline = Instant::now() + timeout;
    (0..times)
        .map(|_| qemu.wait_for(text, deadline.saturating_duration_since(Instant::now())))
        .collect()
}

#[test]
fn the_image_joins_over_vsock_runs_an_invocation_and_powers_off_when_its_lease_ends() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vm.sock");
    let lease = LEASE_SECONDS.to_string();
    let control = start_control(&dir.path().join("data"), &uds, &["--lease-seconds", &lease]);
    let token = control.data_dir.join("worker-token");
    let image = worker_image(&dir.path().join("image"), &control, &token, "qemu-worker");
    // Before the boot, so the lease is spent on the worker, not on uploading.
    write_packages(dir.path());
    control.create_function("hello", &dir.path().join("hello.zip"), &[]);

    let booted = Instant::now();
    let mut qemu = Machine::new(image.direct()).vsock(&uds).start();
    let line = qemu.wait_for("emberd: registered as ", BOOT);
    eprintln!("registered {:.1?} after QEMU started", booted.elapsed());
    let registered = Instant::now();
    assert!(
        line.ends_with(&format!("serving on vsock://{GUEST_CID}:{WORKER_PORT}")),
        "{line}"
    );

    let response = dir.path().join("response.json");
    let invoked = Instant::now();
    let printed = control.aws_json(&[
        "invoke",
        "--function-name",
        "hello",
        "--payload",
        r#"{"name":"qemu"}"#,
        "--log-type",
        "Tail",
        response.to_str().unwrap(),
    ]);
    eprintln!("the invocation took {:.1?}", invoked.elapsed());
    assert_eq!(printed["StatusCode"], 200, "{printed}");
    assert!(printed.get("FunctionError").is_none(), "{printed}");
    assert_eq!(
        std::fs::read_to_string(&response).unwrap(),
        r#"{"message":"Hello, qemu!"}"#
    );
    let tail = base64::engine::general_purpose::STANDARD
        .decode(printed["LogResult"].as_str().expect("a log tail"))
        .expect("LogResult is base64");
    let tail = String::from_utf8_lossy(&tail);
    assert!(tail.contains(r#"hello: greeting "qemu""#), "{tail}");
    // The function ran in the image: its log is on the machine's console too.
    qemu.wait_for(r#"hello: greeting "qemu""#, Duration::from_secs(30));

    // A worker silent for three heartbeat intervals is dead: staying active over twice
    // that shows that its heartbeats arrive.
    let watched = Instant::now();
    while watched.elapsed() < HEARTBEAT * 6 {
        assert_eq!(workers(&control, "active"), 1, "console:\n{}", qemu.tail());
        assert_eq!(workers(&control, "dead"), 0, "console:\n{}", qemu.tail());
        std::thread::sleep(HEARTBEAT / 2);
    }

    let lease_end = Duration::from_secs(LEASE_SECONDS);
    let left = lease_end.saturating_sub(registered.elapsed()) + Duration::from_secs(60);
    qemu.wait_for("emberd: draining: the lease is ending", left);
    qemu.wait_for("emberd: deregistered", Duration::from_secs(60));
    qemu.wait_for("emberd: powering off", Duration::from_secs(60));
    let status = qemu.wait_exit(Duration::from_secs(60));
    assert!(status.success(), "QEMU ended with {status}");
    eprintln!("powered off {:.1?} after registering", registered.elapsed());
    assert_eq!(workers(&control, "active"), 0);
}

#[test]
fn the_image_keeps_trying_while_control_is_unreachable_or_refuses_its_token() {
    let dir = tempfile::tempdir().unwrap();
    let uds = dir.path().join("vm.sock");
    let data = dir.path().join("data");
    // A first start makes control's CA; the image gets another token than control's.
    let control = start_control(&data, &uds, &[]);
    let wrong_token: PathBuf = dir.path().join("wrong-token");
    std::fs::write(&wrong_token, "0123456789abcdef".repeat(4)).unwrap();
    let image = worker_image(&dir.path().join("image"), &control, &wrong_token, "refused");
    control.kill();
    // Nothing listens where the guest's connections to control arrive.
    let _ = std::fs::remove_file(format!("{}_{CONTROL_PORT}", uds.display()));

    let mut qemu = Machine::new(image.direct()).vsock(&uds).start();
    let lines = wait_for_times(
        &mut qemu,
        "emberd: warning: registering: control unreachable",
        2,
        BOOT,
    );
    assert!(lines[1].contains("trying again in"), "{lines:?}");

    let control = start_control(&data, &uds, &[]);
    let lines = wait_for_times(
        &mut qemu,
        "emberd: error: worker: registration refused",
        2,
        Duration::from_secs(120),
    );
    for line in &lines {
        assert!(
            line.contains("403 Forbidden") && line.contains("trying again in"),
            "{line}"
        );
    }

    // Once control takes the image's token, the next attempt joins.
    control.kill();
    // Written over control's own file, which keeps its private mode.
    std::fs::write(
        data.join("worker-token"),
        std::fs::read(&wrong_token).unwrap(),
    )
    .unwrap();
    let _control = start_control(&data, &uds, &[]);
    let line = qemu.wait_for("emberd: registered as ", Duration::from_secs(120));
    assert!(
        line.ends_with(&format!("serving on vsock://{GUEST_CID}:{WORKER_PORT}")),
        "{line}"
    );
}
