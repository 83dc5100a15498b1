//! Builds the sample functions (the separate workspace in `functions/`) for `wasm32-wasip1`
//! and the WAT fixtures in `wat/`, and leaves every module in OUT_DIR for `src/lib.rs` to
//! include, so a plain `cargo build` or `cargo test` at the workspace root ships fresh modules.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use ember_build_support as build;

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
    let target_dir = build::shared_target_dir("ember-functions");
    build::ensure_target(WASM_TARGET);

    // Their own profile in functions/Cargo.toml decides how the functions are built.
    let status = build::cargo(root)
        .args(["build", "--release", "--locked", "--manifest-path"])
        .arg(functions.join("Cargo.toml"))
        .args(["--target", WASM_TARGET, "--target-dir"])
        .arg(&target_dir)
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
