//! Real workers for the end-to-end tests: `emberd serve` processes joined to a running
//! [`Control`], running real micro-VMs (so `/dev/kvm` is required; the tests fail, loudly,
//! without it).
//!
//! `emberd` comes from [`crate::binaries`]; `EMBERD=/path/to/emberd` runs another build.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::binaries::binary;
use crate::{stdout_lines, Control};

/// How long a worker may take to register.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// A running `emberd serve`, killed when dropped.
pub struct Worker {
    /// The id control gave it.
    pub id: String,
    /// Its worker API, `https://127.0.0.1:PORT`.
    pub endpoint: String,
    /// Its metrics listener, `http://127.0.0.1:PORT`.
    pub metrics_endpoint: String,
    pub state_dir: PathBuf,
    child: Child,
}

impl Worker {
    /// Starts a worker for `control` with its state in `state_dir`, waiting until it has
    /// registered and serves.
    pub fn start(control: &Control, state_dir: &Path) -> Worker {
        Worker::start_with(control, state_dir, &[])
    }

    /// Like [`Worker::start`], with `extra` arguments to `emberd serve`.
    pub fn start_with(control: &Control, state_dir: &Path, extra: &[&str]) -> Worker {
        require_kvm();
        let mut child = Command::new(binary("emberd", "emberd"))
            .arg("serve")
            .args(extra)
            .args(["--control", &control.fleet_endpoint])
            .arg("--ca")
            .arg(control.ca())
            .arg("--token-file")
            .arg(control.data_dir.join("worker-token"))
            .args(["--listen", "127.0.0.1:0", "--name", "test-worker"])
            .args(["--metrics-listen", "127.0.0.1:0"])
            .arg("--state-dir")
            .arg(state_dir)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start emberd serve");
        let stdout = stdout_lines(&mut child);
        // `worker ID serving on URL`, then `metrics on URL`.
        let mut lines = std::iter::from_fn(|| stdout.recv_timeout(START_TIMEOUT).ok())
            .filter_map(|line| line.strip_prefix("emberd ").map(str::to_owned));
        let (Some(serving), Some(metrics)) = (lines.next(), lines.next()) else {
            let _ = child.kill();
            panic!("emberd did not register within {START_TIMEOUT:?}");
        };
        let (id, endpoint) = serving
            .strip_prefix("worker ")
            .and_then(|rest| rest.split_once(" serving on "))
            .unwrap_or_else(|| panic!("unexpected emberd line: {serving}"));
        let metrics_endpoint = metrics
            .strip_prefix("metrics on ")
            .unwrap_or_else(|| panic!("unexpected emberd line: {metrics}"));
        Worker {
            id: id.to_owned(),
            endpoint: endpoint.to_owned(),
            metrics_endpoint: metrics_endpoint.to_owned(),
            state_dir: state_dir.to_owned(),
            child,
        }
    }

    /// The worker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// True while the worker has not exited.
    pub fn try_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Kills the worker at once (SIGKILL), as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }

    /// Waits up to `timeout` for the worker to exit on its own.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                started.elapsed() < timeout,
                "emberd did not exit within {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Fails the test unless this machine offers KVM.
pub fn require_kvm() {
    let usable = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_ok();
    assert!(
        usable,
        "/dev/kvm is missing or not accessible: the fleet tests run real micro-VMs"
    );
}
