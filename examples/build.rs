//! Builds the sample functions (the separate workspace in `functions/`) for `wasm32-wasip1`
//! and the WAT fixtures in `wat/`, and leaves every module in OUT_DIR for `src/lib.rs` to
//! include, so a plain `cargo build` or `cargo test` at the workspace root ships fresh modules.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

const WASM_TARGET: &str = "wasm32-wasip1";

/// Modules `src/lib.rs` includes, as cargo names them (packages' `-` becomes `_`).
const FUNCTIONS: [&str; 7] = [
    "echo",
    "hello",
    "json_transform",
    "counter",
    "sha_heavy",
    "oom",
    "env_reader",
];

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest
        .parent()
        .expect("examples lives in the workspace root");
    let functions = manifest.join("functions");
    let wat_dir = manifest.join("wat");
    // Each entry rather than the directory itself, so a stray `functions/target` from a manual
    // build is not rescanned on every build.
    for entry in read_dir_sorted(&functions) {
        if entry.file_name().is_none_or(|n| n != "target") {
            println!("cargo:rerun-if-changed={}", entry.display());
        }
    }
    println!("cargo:rerun-if-changed={}", wat_dir.display());

    let out_dir = PathBuf::from(env::var("OUT_DIR").unwrap());
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out: share one build per target dir.
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("ember-functions"))
        .unwrap_or_else(|| out_dir.join("ember-functions"));
    ensure_target(&env::var("RUSTC").unwrap_or_else(|_| "rustc".into()));

    let mut cmd = Command::new(env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.current_dir(root)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(functions.join("Cargo.toml"))
        .args(["--target", WASM_TARGET, "--target-dir"])
        .arg(&target_dir);
    // The outer build's flags and wrappers (clippy, coverage) are for the host, not the
    // functions; their own profile in functions/Cargo.toml decides how they are built.
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
    let status = cmd
        .status()
        .expect("running cargo to build the sample functions");
    assert!(
        status.success(),
        "building examples/functions for {WASM_TARGET} failed"
    );

    let release = target_dir.join(WASM_TARGET).join("release");
    for module in read_dir_sorted(&release) {
        if module.extension().is_some_and(|e| e == "wasm") {
            let name = module.file_name().unwrap();
            fs::copy(&module, out_dir.join(name))
                .unwrap_or_else(|e| panic!("copying {}: {e}", module.display()));
        }
    }
    for name in FUNCTIONS {
        let module = out_dir.join(format!("{name}.wasm"));
        assert!(
            module.exists(),
            "the functions build left no {}: is its package still in functions/Cargo.toml?",
            module.display()
        );
    }

    for wat_file in read_dir_sorted(&wat_dir) {
        if wat_file.extension().is_some_and(|e| e == "wat") {
            let wasm = wat::parse_file(&wat_file)
                .unwrap_or_else(|e| panic!("converting {}: {e}", wat_file.display()));
            let name = wat_file.with_extension("wasm");
            fs::write(out_dir.join(name.file_name().unwrap()), wasm)
                .unwrap_or_else(|e| panic!("writing {}: {e}", name.display()));
        }
    }
}

fn read_dir_sorted(dir: &Path) -> Vec<PathBuf> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()))
        .map(|entry| entry.expect("reading a directory entry").path())
        .collect();
    entries.sort();
    entries
}

/// Installs the wasm target through rustup when the toolchain lacks it (a fresh machine
/// whose toolchain predates `rust-toolchain.toml`'s target list).
fn ensure_target(rustc: &str) {
    let sysroot = Command::new(rustc)
        .args(["--print", "sysroot"])
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| PathBuf::from(s.trim()));
    let installed = |root: &Path| root.join("lib/rustlib").join(WASM_TARGET).exists();
    if sysroot.as_deref().is_some_and(installed) {
        return;
    }
    let status = Command::new("rustup")
        .args(["target", "add", WASM_TARGET])
        .status();
    assert!(
        matches!(status, Ok(s) if s.success()),
        "the {WASM_TARGET} target is missing and `rustup target add {WASM_TARGET}` failed"
    );
}
