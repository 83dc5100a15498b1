//! `emberd selftest` on this machine's real KVM: one `ok` line with timings, exit 0; and
//! pointed at a KVM device that does not exist, one `FAILED` line saying so, exit 1.

use std::process::Command;

fn selftest(args: &[&str]) -> (bool, Vec<String>) {
    let out = Command::new(env!("CARGO_BIN_EXE_emberd"))
        .arg("selftest")
        .args(args)
        .output()
        .expect("running emberd selftest");
    let stdout = String::from_utf8(out.stdout).expect("UTF-8 output");
    (
        out.status.success(),
        stdout.lines().map(str::to_owned).collect(),
    )
}

#[test]
fn the_self_test_passes_on_this_machine_with_timings() {
    let (success, lines) = selftest(&[]);
    assert!(success, "{lines:?}");
    assert_eq!(lines.len(), 1, "{lines:?}");
    let line = &lines[0];
    let timings = line
        .strip_prefix("ember-selftest: ok ")
        .unwrap_or_else(|| panic!("{line}"));
    let names: Vec<&str> = timings
        .split(' ')
        .map(|field| {
            let (name, ms) = field.split_once('=').expect("NAME=VALUEms");
            let ms: f64 = ms
                .strip_suffix("ms")
                .expect("in ms")
                .parse()
                .expect("a number");
            assert!(ms > 0.0, "{field}");
            name
        })
        .collect();
    assert_eq!(names, ["boot", "echo", "cold", "warm"]);
}

#[test]
fn a_missing_kvm_device_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("kvm");
    let (success, lines) = selftest(&["--kvm", missing.to_str().unwrap()]);
    assert!(!success);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let expected = format!("ember-selftest: FAILED {} missing: ", missing.display());
    assert!(lines[0].starts_with(&expected), "{}", lines[0]);
    assert!(lines[0].contains("the CPU offers"), "{}", lines[0]);
}
