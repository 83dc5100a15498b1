//! The workspace's binaries, for tests of any package. Cargo builds a package's binaries
//! only for that package's own tests (`CARGO_BIN_EXE_*`), and a test of `ember-cli` needs
//! `ember-control` and `emberd` too. So the kit builds a binary once per test process with
//! the Cargo that runs the tests, for the same profile into the same target directory (a
//! no-op when it is up to date; `cargo test --workspace` has built it already), and runs
//! it from there. An environment variable named after the binary in capitals, dashes as
//! underscores (`EMBERD`, `EMBER_CONTROL`), points at another build instead.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

/// The path of binary `bin` of workspace package `package`, built on first use.
pub fn binary(package: &str, bin: &str) -> PathBuf {
    static BUILT: Mutex<Option<HashMap<String, PathBuf>>> = Mutex::new(None);
    let override_var = bin.to_uppercase().replace('-', "_");
    if let Some(path) = std::env::var_os(&override_var) {
        return PathBuf::from(path);
    }
    // One build at a time: Cargo would serialise them on its lock anyway.
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    built
        .get_or_insert_with(HashMap::new)
        .entry(bin.to_owned())
        .or_insert_with(|| build(package, bin))
        .clone()
}

/// The directory of the test's build profile, `TARGET/PROFILE` (a test runs from
/// `TARGET/PROFILE/deps/`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test's own path");
    exe.parent()
        .and_then(Path::parent)
        .expect("tests run from TARGET/PROFILE/deps")
        .to_owned()
}

fn build(package: &str, bin: &str) -> PathBuf {
    let profile_dir = profile_dir();
    let target_dir = profile_dir.parent().expect("a target directory");
    let profile = match profile_dir.file_name().and_then(|n| n.to_str()) {
        Some("debug") => "dev",
        Some(other) => other,
        None => panic!("no profile in {}", profile_dir.display()),
    };
    let workspace = concat!(env!("CARGO_MANIFEST_DIR"), "/../Cargo.toml");
    let out = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", package, "--bin", bin])
        .args(["--profile", profile, "--manifest-path", workspace])
        .arg("--target-dir")
        .arg(target_dir)
        .output()
        .unwrap_or_else(|e| panic!("run cargo build for {bin}: {e}"));
    assert!(
        out.status.success(),
        "building {bin} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    profile_dir.join(bin)
}
