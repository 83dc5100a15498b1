//! The fixed fuzz campaign CI runs: every target, a fixed seed, a fixed count
//! (`EMBER_FUZZ_ITERATIONS`, default below), so a failure reproduces with the same numbers.

use ember_fuzz::{run, targets, Campaign};

const DEFAULT_ITERATIONS: u64 = 50_000;

fn iterations() -> u64 {
    std::env::var("EMBER_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_ITERATIONS)
}

fn campaign(name: &str) {
    let target = targets::by_name(name).expect("a target");
    let report = run(
        target,
        &Campaign {
            seed: 0x5eed,
            iterations: iterations(),
            failures_dir: Some(env!("CARGO_TARGET_TMPDIR").into()),
            ..Campaign::default()
        },
    );
    println!(
        "{name}: {} inputs in {:.1} s, {} outcomes, corpus {}",
        report.iterations,
        report.elapsed.as_secs_f64(),
        report.outcomes.len(),
        report.corpus
    );
    if let Some(failure) = report.failure {
        panic!(
            "{name}: {} (input saved to {:?}; replay with `ember-fuzz --target {name} --replay FILE`)",
            failure.message, failure.saved_to
        );
    }
    assert_eq!(
        report.iterations,
        iterations(),
        "the campaign stopped early"
    );
    assert!(
        report.outcomes.len() > 1,
        "{name}: every input ended the same way; the target is not reaching the code"
    );
}

#[test]
fn frames() {
    campaign("frames");
}

#[test]
fn guest_payloads() {
    campaign("guest_payloads");
}

#[test]
fn module() {
    campaign("module");
}

#[test]
fn package() {
    campaign("package");
}

#[test]
fn sigv4_parse() {
    campaign("sigv4_parse");
}

#[test]
fn sigv4_round_trip() {
    campaign("sigv4_round_trip");
}

#[test]
fn fleet_messages() {
    campaign("fleet_messages");
}

#[test]
fn vsock_device() {
    campaign("vsock_device");
}

#[test]
fn every_target_has_a_test() {
    let tested = [
        "frames",
        "guest_payloads",
        "module",
        "package",
        "sigv4_parse",
        "sigv4_round_trip",
        "fleet_messages",
        "vsock_device",
    ];
    for target in targets::ALL {
        assert!(tested.contains(&target.name), "{} has no test", target.name);
    }
}
