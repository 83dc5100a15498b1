//! Real workers for the end-to-end tests: `emberd serve` processes joined to a running
//! [`Control`], running real micro-VMs (so `/dev/kvm` is required; the tests fail, loudly,
//! without it).
//!
//! `emberd` is host-vmm's binary, and Cargo builds a package's binaries only for that
//! package's own tests. So the harness builds it once per test process with the Cargo
//! that runs the tests, for the same profile into the same target directory (a no-op when
//! it is up to date; `cargo test --workspace` has built it already), and runs it from
//! there. `EMBERD=/path/to/emberd` skips the build.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use super::{stdout_lines, Control};

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
        require_kvm();
        let mut child = Command::new(emberd())
            .arg("serve")
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

/// The `emberd` binary of this build profile, built on first use.
pub fn emberd() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        if let Some(path) = std::env::var_os("EMBERD") {
            return PathBuf::from(path);
        }
        // This test runs from TARGET/PROFILE/deps/.
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("tests run from TARGET/PROFILE/deps");
        let target_dir = profile_dir.parent().expect("a target directory");
        let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
            Some("debug") => "dev",
            Some(other) => other,
            None => panic!("no profile in {}", profile_dir.display()),
        };
        let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
        let out = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "host-vmm", "--bin", "emberd"])
            .args(["--profile", profile, "--manifest-path", workspace])
            .arg("--target-dir")
            .arg(target_dir)
            .output()
            .expect("run cargo build for emberd");
        assert!(
            out.status.success(),
            "building emberd failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        profile_dir.join("emberd")
    })
    .clone()
}
