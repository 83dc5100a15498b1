//! Builds guest-init for `x86_64-unknown-none` and hands the ELF to this crate, so a plain
//! `cargo build` or `cargo test` at the workspace root always ships a matching guest.

use std::env;
use std::path::PathBuf;

use ember_build_support as build;

const GUEST_TARGET: &str = "x86_64-unknown-none";

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest
        .ancestors()
        .nth(2)
        .expect("the VMM crate lives in host-vmm/vmm under the workspace root");
    for dep in ["guest-init", "wire", "Cargo.lock"] {
        println!("cargo:rerun-if-changed={}", root.join(dep).display());
    }
    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    let target_dir = build::shared_target_dir("ember-guest");
    build::ensure_target(GUEST_TARGET);

    let link_script = root.join("guest-init/link.ld");
    let rustflags = [
        "-Crelocation-model=static".to_string(),
        "-Ccode-model=small".to_string(),
        "-Cstrip=debuginfo".to_string(),
        format!("-Clink-arg=-T{}", link_script.display()),
    ]
    .join("\x1f");
    let status = build::cargo(root)
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
        .arg(&target_dir)
        .env("CARGO_ENCODED_RUSTFLAGS", rustflags)
        .status()
        .expect("running cargo to build guest-init");
    assert!(
        status.success(),
        "building guest-init for {GUEST_TARGET} failed"
    );
    let elf = target_dir.join(GUEST_TARGET).join("release/guest-init");
    std::fs::copy(&elf, out_dir.join("guest-init.elf"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", elf.display()));
}
