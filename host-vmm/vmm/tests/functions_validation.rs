//! Bad functions and bad requests are refused before any VM exists.
//!
//! One test on purpose: it counts this process's threads (a VM is at least one vCPU thread),
//! and the test harness adds a thread for every test it runs concurrently.

mod function_support;

use std::time::Duration;

use ember_vmm::function::{Failure, SpecBuilder};
use ember_wire::function::PAYLOAD_MAX;
use function_support::{open_fds, pool, threads, wasm};

/// Builds `module` with `builder` and checks it is refused with `expected` (a `Failure`
/// variant, compared by kind) while no thread or file descriptor appears.
fn refused(what: &str, builder: SpecBuilder, module: &[u8], expected: fn(&Failure) -> bool) {
    let (threads_before, fds_before) = (threads(), open_fds());
    let result = builder.build(module);
    let (threads_after, fds_after) = (threads(), open_fds());
    match result {
        Err(e) if expected(&e) => {}
        Err(e) => panic!("{what}: refused, but with the wrong kind of failure: {e:?}"),
        Ok(spec) => panic!("{what}: accepted as a {:?}; it must be refused", spec.kind),
    }
    assert_eq!(
        threads_after, threads_before,
        "{what}: the thread count changed across SpecBuilder::build (a VM was started?)"
    );
    assert_eq!(
        fds_after, fds_before,
        "{what}: the open file descriptor count changed across SpecBuilder::build \
         (/dev/kvm or a VM fd opened?)"
    );
}

fn invalid_module(f: &Failure) -> bool {
    matches!(f, Failure::InvalidModule(_))
}

fn invalid_config(f: &Failure) -> bool {
    matches!(f, Failure::InvalidConfig(_))
}

#[test]
fn invalid_functions_and_payloads_are_refused_before_any_vm() {
    // Warm up anything lazily initialised on first use (not a VM) so it is not counted.
    let _ = SpecBuilder::default().build(ember_examples::ECHO);

    // Modules.
    refused(
        "garbage bytes",
        SpecBuilder::default(),
        b"this is not a WebAssembly module",
        invalid_module,
    );
    refused(
        "an empty module file",
        SpecBuilder::default(),
        b"",
        invalid_module,
    );
    let echo = ember_examples::ECHO;
    refused(
        "echo truncated to half its length",
        SpecBuilder::default(),
        &echo[..echo.len() / 2],
        invalid_module,
    );
    refused(
        "echo without its last byte",
        SpecBuilder::default(),
        &echo[..echo.len() - 1],
        invalid_module,
    );
    refused(
        "a module exporting neither `_start` nor `handle`",
        SpecBuilder::default(),
        &wasm::module(&[], &["other"], &[]),
        invalid_module,
    );
    refused(
        "hello with handler `missing` (it exports `handle` and no `_start`)",
        SpecBuilder {
            handler: "missing".into(),
            ..SpecBuilder::default()
        },
        ember_examples::HELLO,
        invalid_module,
    );
    refused(
        "a reactor importing env.foo",
        SpecBuilder::default(),
        &wasm::module(&[("env", "foo", 0)], &["handle"], &[]),
        invalid_module,
    );
    // Sanity check of the hand assembler: the same module without the import is accepted.
    let plain = wasm::module(&[], &["handle"], &[]);
    SpecBuilder::default()
        .build(&plain)
        .unwrap_or_else(|e| panic!("the hand-assembled reactor was refused: {e}"));
    let exiting = wasm::exiting_command(1);
    SpecBuilder::default()
        .build(&exiting)
        .unwrap_or_else(|e| panic!("the hand-assembled command was refused: {e}"));

    // Settings (checked whatever the module).
    for memory_mib in [0u32, 3, 4000] {
        refused(
            &format!("memory_mib {memory_mib}"),
            SpecBuilder {
                memory_mib,
                ..SpecBuilder::default()
            },
            ember_examples::ECHO,
            invalid_config,
        );
    }
    for timeout in [Duration::ZERO, Duration::from_secs(901)] {
        refused(
            &format!("timeout {timeout:?}"),
            SpecBuilder {
                timeout,
                ..SpecBuilder::default()
            },
            ember_examples::ECHO,
            invalid_config,
        );
    }
    // The limits themselves are accepted.
    for (memory_mib, timeout) in [
        (128, Duration::from_secs(900)),
        (1024, Duration::from_secs(1)),
    ] {
        SpecBuilder {
            memory_mib,
            timeout,
            ..SpecBuilder::default()
        }
        .build(ember_examples::ECHO)
        .unwrap_or_else(|e| panic!("memory {memory_mib} MiB, timeout {timeout:?} refused: {e}"));
    }

    // A payload over 6 MiB is refused by the pool without creating an environment.
    let (pool, _logs) = pool();
    let spec = function_support::spec("echo", ember_examples::ECHO);
    let payload = vec![b'x'; PAYLOAD_MAX + 1];
    let threads_before = threads();
    let inv = pool.invoke(&spec, &payload);
    let threads_after = threads();
    match &inv.error {
        Some(Failure::PayloadTooLarge(n)) => assert_eq!(
            *n,
            6 * 1024 * 1024 + 1,
            "PayloadTooLarge reports the wrong size"
        ),
        other => panic!("a 6 MiB + 1 byte payload: expected PayloadTooLarge, got {other:?}"),
    }
    assert_eq!(
        threads_after, threads_before,
        "refusing an oversized payload changed the thread count (a VM was started?)"
    );
    assert_eq!(pool.total(), 0, "refusing a payload created an environment");
    assert!(
        !inv.cold && inv.environment == 0 && inv.init_duration.is_none(),
        "a refused payload reports an environment: {inv:?}"
    );
}
