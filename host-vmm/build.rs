//! Builds guest-init for `x86_64-unknown-none` and hands the ELF to this crate, so a plain
//! `cargo build` or `cargo test` at the workspace root always ships a matching guest.

use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const GUEST_TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest
        .parent()
        .expect("host-vmm lives in the workspace root");
    for dep in ["guest-init", "wire", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dep).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share one guest build per target dir.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("ember-guest"))
        .unwrap_or_else(|| out_dir.join("ember-guest"));
    ensure_target(&env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));

    let link_script = root.join("guest-init/link.ld");
    let rustflags = [
        "-Crelocation-model=static".to_string(),
        "-Ccode-model=small".to_string(),
        "-Cstrip=debuginfo".to_string(),
        format!("-Clink-arg=-T{}", link_script.display()),
    ]
    .join("\x1f");
    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "guest-init",
            "--features",
            "guest",
        ])
        .args(["--target", GUEST_TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not the guest.
    for var in [
        "RUSTFLAGS",
        "CARGO_BUILD_RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("CARGO_ENCODED_RUSTFLAGS", rustflags);
    let status = cmd.status().expect("running cargo to build guest-init");
    assert!(
        status.success(),
        "building guest-init for {GUEST_TARGET} failed"
    );
    let elf = target_dir.join(GUEST_TARGET).join("release/guest-init");
    std::fs::copy(&elf, out_dir.join("guest-init.elf"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", elf.display()));
}

/// Installs the guest target through rustup when the toolchain lacks it (a fresh machine
/// whose toolchain predates `rust-toolchain.toml`'s target list).
fn ensure_target(rustc: &str) {
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(GUEST_TARGET).exists();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", GUEST_TARGET])
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "the {GUEST_TARGET} target is missing and `rustup target add {GUEST_TARGET}` failed"
    );
}
