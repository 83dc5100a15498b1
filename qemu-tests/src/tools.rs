//! The host programs the tests run: Debian's `qemu-system-x86_64` and OVMF firmware, and
//! rust-vmm's `vhost-device-vsock` (the guest's vsock device), installed on first use when
//! missing, so `cargo test` needs no setup of its own; when an install fails, the tests fail
//! with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::Instant;

/// Where the firmware Debian's `ovmf` package installs.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

/// The crates.io release of `vhost-device-vsock` the tests run (its `--vm` syntax).
const VHOST_DEVICE_VSOCK: &str = "0.3.0";

/// Paths of the host programs.
#[derive(Clone, Debug)]
pub struct Tools {
    pub qemu: PathBuf,
    pub ovmf_code: PathBuf,
    pub ovmf_vars: PathBuf,
}

/// The tools, installed once per test process.
pub fn tools() -> &'static Tools {
    static TOOLS: OnceLock<Tools> = OnceLock::new();
    TOOLS.get_or_init(|| {
        if which("qemu-system-x86_64").is_none() || !Path::new(OVMF_CODE).exists() {
            apt_install(&["qemu-system-x86", "ovmf"]);
        }
        Tools {
            qemu: which("qemu-system-x86_64").expect("qemu-system-x86_64 after installing it"),
            ovmf_code: OVMF_CODE.into(),
            ovmf_vars: OVMF_VARS.into(),
        }
    })
}

/// `vhost-device-vsock`, built with `cargo install` into `TARGET/qemu-tools` the first time
/// (about two minutes here) and reused by every later run. Debian has no package of it.
pub fn vhost_device_vsock() -> &'static Path {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = ember_testkit::binaries::profile_dir()
            .parent()
            .expect("a target directory")
            .join("qemu-tools");
        let binary = root.join("bin/vhost-device-vsock");
        std::fs::create_dir_all(&root).unwrap();
        // Test binaries run in processes of their own: one installs, the others wait.
        let lock = std::fs::File::create(root.join("install.lock")).unwrap();
        lock.lock().expect("lock TARGET/qemu-tools");
        if !binary.exists() {
            cargo_install(&root);
        }
        binary
    })
}

fn cargo_install(root: &Path) {
    let started = Instant::now();
    let out = Command::new(env!("CARGO"))
        .args(["install", "--locked", "--quiet", "vhost-device-vsock"])
        .args(["--version", VHOST_DEVICE_VSOCK, "--root"])
        .arg(root)
        // Its own temporary target directory, not the workspace's (and not its lock).
        .env_remove("CARGO_TARGET_DIR")
        .current_dir(root)
        .output()
        .expect("run cargo install");
    assert!(
        out.status.success(),
        "cargo install vhost-device-vsock {VHOST_DEVICE_VSOCK} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!(
        "qemu-tests: installed vhost-device-vsock {VHOST_DEVICE_VSOCK} in {:.0?}",
        started.elapsed()
    );
}

fn apt_install(packages: &[&str]) {
    let update = Command::new("apt-get")
        .args(["update", "-qq"])
        .status()
        .expect("run apt-get update");
    assert!(update.success(), "apt-get update failed");
    let out = Command::new("apt-get")
        .args(["install", "-y", "-qq", "--no-install-recommends"])
        .args(packages)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .output()
        .expect("run apt-get install");
    assert!(
        out.status.success(),
        "apt-get install {packages:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|path| path.is_file())
}
