//! Limits of one invocation and of the pool: concurrency, payload size, log tail size.

mod function_support;

use std::collections::HashSet;
use std::sync::{Arc, Barrier};

use ember_vmm::function::{Failure, SpecBuilder};
use ember_wire::function::{LOG_TAIL, PAYLOAD_MAX};
use function_support::{
    assert_same_bytes, build, invoke_err, invoke_ok, json, lossy, patterned, pool, spec, wasm,
};

#[test]
fn sixteen_concurrent_invocations_all_complete_correctly() {
    let (pool, _logs) = pool();
    let transform = spec("json-transform", ember_examples::JSON_TRANSFORM);
    const N: usize = 16;
    let barrier = Arc::new(Barrier::new(N));
    let results: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..N)
            .map(|i| {
                let (pool, transform, barrier) = (&pool, &transform, barrier.clone());
                s.spawn(move || {
                    // Item i costs i + 0.5 and there are i + 1 of them.
                    let event = format!(
                        r#"{{"items":[{{"name":"item-{i}","price":{i}.5,"qty":{}}},{{"name":"a{i}","price":1,"qty":1}}]}}"#,
                        i + 1
                    );
                    barrier.wait();
                    (i, pool.invoke(transform, event.as_bytes()))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let mut environments = HashSet::new();
    for (i, inv) in &results {
        if let Some(e) = &inv.error {
            panic!(
                "concurrent invocation {i} failed: {e:?}; log tail {:?}",
                lossy(&inv.log_tail)
            );
        }
        let expected_total = (*i as f64 + 0.5) * (*i as f64 + 1.0) + 1.0;
        assert_eq!(
            json(&inv.output),
            serde_json::json!({
                "count": 2,
                "total": expected_total,
                "names": [format!("A{i}"), format!("ITEM-{i}")],
            }),
            "concurrent invocation {i}"
        );
        environments.insert(inv.environment);
    }
    let stats = pool.stats(transform.key());
    assert_eq!(stats.busy, 0, "{stats:?}");
    assert_eq!(
        stats.idle,
        environments.len(),
        "every environment used is idle again: {stats:?}, used {environments:?}"
    );
    assert!(environments.len() <= N);
}

#[test]
fn a_six_mib_payload_round_trips() {
    let (pool, _logs) = pool();
    let echo = build(
        SpecBuilder {
            name: "echo".into(),
            memory_mib: 128,
            ..SpecBuilder::default()
        },
        ember_examples::ECHO,
    );
    assert_eq!(PAYLOAD_MAX, 6 * 1024 * 1024);
    let payload = patterned(6 * 1024 * 1024, 6);
    let inv = invoke_ok(&pool, &echo, &payload);
    assert_same_bytes(&inv.output, &payload, "6 MiB echo");
    // And again, on the same (warm) environment.
    let inv2 = invoke_ok(&pool, &echo, &payload);
    assert_same_bytes(&inv2.output, &payload, "second 6 MiB echo");
    assert_eq!(inv2.environment, inv.environment);
}

#[test]
fn a_payload_over_six_mib_is_refused() {
    let (pool, _logs) = pool();
    let echo = spec("echo", ember_examples::ECHO);
    let inv = pool.invoke(&echo, &vec![0u8; PAYLOAD_MAX + 1]);
    assert_eq!(
        inv.error,
        Some(Failure::PayloadTooLarge(6 * 1024 * 1024 + 1))
    );
    let message = inv.error.unwrap().to_string();
    assert!(message.contains("6291457"), "{message}");
    assert_eq!(pool.total(), 0, "an environment was created for it");
    // The pool is fine afterwards.
    assert_eq!(invoke_ok(&pool, &echo, b"next").output, b"next");
}

#[test]
fn a_response_over_six_mib_is_a_function_error() {
    let (pool, _logs) = pool();
    let exact = spec("write-6mib", &wasm::writer_reactor(PAYLOAD_MAX as u32));
    let inv = invoke_ok(&pool, &exact, b"");
    assert!(
        inv.output.len() == PAYLOAD_MAX && inv.output.iter().all(|&b| b == 0),
        "a 6 MiB response came back as {} bytes",
        inv.output.len()
    );
    let over = spec(
        "write-6mib+1",
        &wasm::writer_reactor(PAYLOAD_MAX as u32 + 1),
    );
    let (inv, failure) = invoke_err(&pool, &over, b"");
    assert!(
        matches!(&failure, Failure::Function(m) if m.contains("6291457")),
        "a 6 MiB + 1 byte response: {failure:?}"
    );
    assert!(
        inv.output.is_empty(),
        "part of an oversized response was returned"
    );
}

/// The log line hello writes for `name` (ASCII letters and digits only: no escaping).
fn hello_line(name: &str) -> String {
    format!("hello: greeting \"{name}\"\n")
}

/// A name with no repeats at a 4 KiB distance: the position of a tail is visible.
fn long_name(chars: usize) -> String {
    let mut name = String::with_capacity(chars + 8);
    let mut i = 0;
    while name.len() < chars {
        name.push_str(&format!("n{i:07}"));
        i += 1;
    }
    name.truncate(chars);
    name
}

#[test]
fn log_tail_is_the_last_4_kib_of_the_log() {
    let (pool, logs) = pool();
    let hello = spec("hello", ember_examples::HELLO);
    let name = long_name(10_000);
    let line = hello_line(&name);
    let inv = invoke_ok(&pool, &hello, format!(r#"{{"name":"{name}"}}"#).as_bytes());
    assert_eq!(json(&inv.output)["message"], format!("Hello, {name}!"));
    assert_eq!(LOG_TAIL, 4096);
    assert_eq!(
        inv.log_tail.len(),
        4096,
        "log tail of a {} byte log",
        line.len()
    );
    assert_eq!(
        lossy(&inv.log_tail),
        line[line.len() - 4096..],
        "the log tail is not the end of the log"
    );
    assert_eq!(
        lossy(&logs.of("hello")),
        line,
        "the log sink did not get the whole log"
    );

    // The next invocation's tail is its own log only.
    let inv = invoke_ok(&pool, &hello, br#"{"name":"Ada"}"#);
    assert_eq!(lossy(&inv.log_tail), hello_line("Ada"));
}

#[test]
fn a_huge_log_is_truncated_in_the_stream_but_its_tail_is_kept() {
    let (pool, logs) = pool();
    let hello = spec("hello", ember_examples::HELLO);
    let name = long_name(1536 * 1024);
    let line = hello_line(&name);
    let inv = invoke_ok(&pool, &hello, format!(r#"{{"name":"{name}"}}"#).as_bytes());
    assert_eq!(
        inv.output.len(),
        r#"{"message":"Hello, !"}"#.len() + name.len()
    );
    assert_eq!(
        lossy(&inv.log_tail),
        line[line.len() - 4096..],
        "the log tail is not the end of a 1.5 MiB log"
    );
    let streamed = logs.of("hello");
    assert!(
        streamed.len() < line.len() && streamed.len() <= (1 << 20) + 64,
        "{} of {} log bytes streamed to the sink",
        streamed.len(),
        line.len()
    );
    assert!(
        line.as_bytes().starts_with(&streamed[..1 << 19]),
        "the streamed log does not start with the log"
    );
    assert!(
        lossy(&streamed).contains("log truncated"),
        "the streamed log does not say it was truncated"
    );
    assert!(
        logs.chunks_of("hello") > 1,
        "1 MiB of log came in one chunk"
    );
}
