//! Helpers for build scripts that build another crate of this repository for another
//! target with a nested cargo: guest-init for `x86_64-unknown-none` (host-vmm) and the
//! sample functions for `wasm32-wasip1` (ember-examples).

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A directory for the nested build shared by every profile of the outer build:
/// OUT_DIR is `<target>/<profile>/build/<pkg>-<hash>/out`, so this is `<target>/<name>`.
pub fn shared_target_dir(name: &str) -> PathBuf {
    let out_dir = PathBuf::from(env::var("OUT_DIR").expect("run from a build script"));
    out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join(name))
        .unwrap_or_else(|| out_dir.join(name))
}

/// `cargo`, run in `root`, without the outer build's flags and wrappers (clippy, coverage,
/// a target directory): those are for the host crates, not for the nested build.
pub fn cargo(root: &Path) -> Command {
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root);
    for var in [
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd
}

/// Installs `target` through rustup when the toolchain lacks it (a toolchain installed
/// before `rust-toolchain.toml` listed its targets).
pub fn ensure_target(target: &str) {
    let rustc = env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(target).exists();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", target])
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "the {target} target is missing and `rustup target add {target}` failed"
    );
}
