//! The host programs the tests run: Debian's `qemu-system-x86_64` and OVMF firmware,
//! installed on first use when missing, so `cargo test` needs no setup of its own; when the
//! install fails, the tests fail with the reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Where the firmware Debian's `ovmf` package installs.
const OVMF_CODE: &str = "/usr/share/OVMF/OVMF_CODE_4M.fd";
const OVMF_VARS: &str = "/usr/share/OVMF/OVMF_VARS_4M.fd";

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
