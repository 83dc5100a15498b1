//! Every sample function in `ember-examples`, run through a pool: its documented response,
//! log or failure.

mod function_support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use ember_vmm::function::{Failure, SpecBuilder};
use function_support::{
    assert_same_bytes, build, invoke_err, invoke_ok, json, lossy, patterned, pool, spec, wait_for,
    wasm,
};

#[test]
fn echo_returns_its_input() {
    let (pool, _logs) = pool();
    let echo = spec("echo", ember_examples::ECHO);
    let binary = patterned(64 * 1024, 7);
    let payloads: [&[u8]; 4] = [b"hello, ember", b"", b"{\"a\":[1,2,3]}", &binary];
    let mut environments = Vec::new();
    for (i, payload) in payloads.into_iter().enumerate() {
        let inv = invoke_ok(&pool, &echo, payload);
        assert_same_bytes(&inv.output, payload, &format!("echo of payload {i}"));
        assert_eq!(inv.cold, i == 0, "invocation {i}: cold = {}", inv.cold);
        environments.push(inv.environment);
    }
    assert!(
        environments.iter().all(|&e| e == environments[0]) && environments[0] != 0,
        "a command's environment is reused between invocations: {environments:?}"
    );
}

#[test]
fn hello_greets_and_logs() {
    let (pool, logs) = pool();
    let hello = spec("hello", ember_examples::HELLO);

    let inv = invoke_ok(&pool, &hello, br#"{"name":"Ada"}"#);
    assert_eq!(lossy(&inv.output), r#"{"message":"Hello, Ada!"}"#);
    let line = "hello: greeting \"Ada\"";
    let tail = lossy(&inv.log_tail);
    assert!(
        tail.contains(line),
        "the log tail {tail:?} lacks the log line {line:?}"
    );
    let streamed = lossy(&logs.of("hello"));
    assert!(
        streamed.contains(line),
        "the log sink got {streamed:?}, without the log line {line:?}"
    );

    // No event: greets the world. The log tail holds this invocation's log only.
    let inv = invoke_ok(&pool, &hello, b"");
    assert_eq!(lossy(&inv.output), r#"{"message":"Hello, world!"}"#);
    let tail = lossy(&inv.log_tail);
    assert!(
        tail.contains("greeting \"world\"") && !tail.contains("Ada"),
        "second invocation's log tail: {tail:?}"
    );
    assert!(
        lossy(&logs.of("hello")).contains("greeting \"world\""),
        "the log sink did not get the second invocation's line"
    );
}

#[test]
fn json_transform_totals_items() {
    let (pool, _logs) = pool();
    let transform = spec("json-transform", ember_examples::JSON_TRANSFORM);
    let event = br#"{"items":[
        {"name":"pear","price":1.5,"qty":2},
        {"name":"apple","price":0.25,"qty":4},
        {"name":"fig","price":2,"qty":0.5}
    ]}"#;
    let inv = invoke_ok(&pool, &transform, event);
    let got = json(&inv.output);
    assert_eq!(
        got,
        serde_json::json!({"count": 3, "total": 5.0, "names": ["APPLE", "FIG", "PEAR"]}),
        "response to {}",
        lossy(event)
    );
    let inv = invoke_ok(&pool, &transform, br#"{"items":[]}"#);
    assert_eq!(
        json(&inv.output),
        serde_json::json!({"count": 0, "total": 0.0, "names": []})
    );
}

#[test]
fn json_transform_invalid_event_is_a_function_error_with_a_log() {
    let (pool, logs) = pool();
    let transform = spec("json-transform", ember_examples::JSON_TRANSFORM);
    let first = invoke_ok(&pool, &transform, br#"{"items":[]}"#);

    let (inv, failure) = invoke_err(&pool, &transform, b"{not json");
    assert!(
        matches!(&failure, Failure::Function(m) if m.contains("exit") && m.contains('1')),
        "invalid JSON: expected a function error naming exit code 1, got {failure:?}"
    );
    let tail = lossy(&inv.log_tail);
    assert!(
        tail.contains("json-transform: invalid event"),
        "the log tail does not say what was wrong: {tail:?}"
    );
    assert!(
        lossy(&logs.of("json-transform")).contains("json-transform: invalid event"),
        "the log sink did not get the error line"
    );
    assert!(inv.output.is_empty(), "a failed invocation has output");

    // A reactor that failed loses its environment; the next invocation starts a new one.
    assert_eq!(
        inv.environment, first.environment,
        "the failure ran elsewhere"
    );
    let next = invoke_ok(&pool, &transform, br#"{"items":[]}"#);
    assert!(
        next.cold && next.environment != first.environment,
        "after a reactor failed, its environment was reused ({}; cold = {})",
        next.environment,
        next.cold
    );
}

#[test]
fn sha_heavy_matches_the_native_digest() {
    let (pool, _logs) = pool();
    let sha = spec("sha-heavy", ember_examples::SHA_HEAVY);
    let inv = invoke_ok(&pool, &sha, br#"{"mib":2}"#);
    let got = json(&inv.output);
    assert_eq!(
        got,
        serde_json::json!({"mib": 2, "sha256": ember_examples::digest_pattern(2)}),
        "sha-heavy of 2 MiB"
    );
}

#[test]
fn env_reader_sees_the_configured_variables() {
    let (pool, _logs) = pool();
    let vars = [
        ("GREETING", "hello"),
        ("STAGE", "test"),
        ("WITH_EQUALS", "a=b=c"),
        ("UNICODE", "grüße ✓"),
        ("EMPTY", ""),
    ];
    let reader = build(
        SpecBuilder {
            name: "env-reader".into(),
            env: vars
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..SpecBuilder::default()
        },
        ember_examples::ENV_READER,
    );
    let inv = invoke_ok(&pool, &reader, b"");
    let got: BTreeMap<String, String> = serde_json::from_slice(&inv.output).unwrap_or_else(|e| {
        panic!(
            "env-reader's response {:?} is not a map of strings: {e}",
            lossy(&inv.output)
        )
    });
    for (k, v) in vars {
        assert_eq!(
            got.get(k).map(String::as_str),
            Some(v),
            "variable {k} in {got:?}"
        );
    }

    // Another function's variables are not visible.
    let other = build(
        SpecBuilder {
            name: "env-reader-2".into(),
            env: vec![("ONLY_HERE".into(), "2".into())],
            ..SpecBuilder::default()
        },
        ember_examples::ENV_READER,
    );
    let inv = invoke_ok(&pool, &other, b"");
    let got: BTreeMap<String, String> = serde_json::from_slice(&inv.output).unwrap();
    assert_eq!(got.get("ONLY_HERE").map(String::as_str), Some("2"));
    assert!(
        !got.contains_key("GREETING"),
        "another function's variables leaked: {got:?}"
    );
}

#[test]
fn trap_is_a_function_error_that_discards_the_environment() {
    let (pool, _logs) = pool();
    let trap = spec("trap", ember_examples::TRAP);
    let (first, failure) = invoke_err(&pool, &trap, b"");
    assert!(
        matches!(&failure, Failure::Function(m) if m.contains("unreachable")),
        "expected a function error mentioning the `unreachable` trap, got {failure:?}"
    );
    assert!(first.cold && first.environment != 0);
    let (second, failure) = invoke_err(&pool, &trap, b"");
    assert!(matches!(failure, Failure::Function(_)), "{failure:?}");
    assert!(
        second.cold && second.environment != first.environment,
        "a trapped reactor's environment was reused: {} then {}",
        first.environment,
        second.environment
    );
    assert_eq!(
        pool.total(),
        0,
        "trapped environments are still in the pool"
    );
}

#[test]
fn init_trap_is_an_init_error() {
    let (pool, _logs) = pool();
    let init_trap = spec("init-trap", ember_examples::INIT_TRAP);
    for attempt in 0..2 {
        let (inv, failure) = invoke_err(&pool, &init_trap, b"");
        assert!(
            matches!(&failure, Failure::Init(m) if m.contains("unreachable")),
            "attempt {attempt}: expected an init error mentioning the trap, got {failure:?}"
        );
        assert!(inv.output.is_empty());
        assert_eq!(
            pool.total(),
            0,
            "attempt {attempt}: a failed init left an environment"
        );
    }
    // The pool still runs good functions.
    let echo = spec("echo", ember_examples::ECHO);
    assert_eq!(invoke_ok(&pool, &echo, b"ok").output, b"ok");
}

#[test]
fn an_init_error_shows_the_init_log() {
    let (pool, logs) = pool();
    let failing = spec("logging-init-trap", &wasm::logging_init_trap(*b"boom"));
    let (inv, failure) = invoke_err(&pool, &failing, b"");
    let Failure::Init(message) = &failure else {
        panic!("expected an init error, got {failure:?}");
    };
    assert!(message.contains("unreachable"), "{message:?}");
    assert_eq!(
        lossy(&logs.of("logging-init-trap")),
        "boom",
        "the log sink did not get the init phase's log"
    );
    // The caller sees what the init phase logged: in the log tail or in the error.
    assert!(
        lossy(&inv.log_tail).contains("boom") || message.contains("boom"),
        "neither the log tail {:?} nor the error {message:?} shows the init phase's log",
        lossy(&inv.log_tail)
    );
}

#[test]
fn oom_is_out_of_memory() {
    let (pool, _logs) = pool();
    let memory_mib = 64;
    let oom = build(
        SpecBuilder {
            name: "oom".into(),
            memory_mib,
            ..SpecBuilder::default()
        },
        ember_examples::OOM,
    );
    let (inv, failure) = invoke_err(&pool, &oom, b"");
    assert!(
        matches!(failure, Failure::OutOfMemory(_)),
        "expected OutOfMemory, got {failure:?}"
    );
    let tail = lossy(&inv.log_tail);
    assert!(
        tail.contains("memory allocation of 1048576 bytes failed"),
        "the log tail does not show the failed allocation: {tail:?}"
    );
    assert!(
        inv.memory_used > 1 << 20 && inv.memory_used <= u64::from(memory_mib) << 20,
        "memory_used {} for a {memory_mib} MiB function",
        inv.memory_used
    );
    assert_eq!(
        pool.total(),
        0,
        "an out-of-memory reactor kept its environment"
    );
}

#[test]
fn loop_times_out_and_the_pool_carries_on() {
    let (pool, _logs) = pool();
    let looping = build(
        SpecBuilder {
            name: "loop".into(),
            timeout: Duration::from_secs(1),
            ..SpecBuilder::default()
        },
        ember_examples::LOOP,
    );
    let echo = spec("echo", ember_examples::ECHO);
    // Create the template first, so the timing below is the invocation's.
    invoke_ok(&pool, &echo, b"warm");

    let start = Instant::now();
    let (first, failure, took, busy_seen) = std::thread::scope(|s| {
        let running = s.spawn(|| {
            let (inv, failure) = invoke_err(&pool, &looping, b"");
            (inv, failure, start.elapsed())
        });
        // While it runs, the pool counts it as busy.
        let busy_seen = wait_for(Duration::from_millis(800), || {
            pool.stats(looping.key()).busy == 1
        });
        let (inv, failure, took) = running.join().unwrap();
        (inv, failure, took, busy_seen)
    });
    assert!(
        busy_seen.is_some(),
        "the running invocation was never counted as busy"
    );
    assert_eq!(pool.stats(looping.key()).busy, 0);
    assert_eq!(failure, Failure::Timeout(Duration::from_secs(1)));
    assert_eq!(failure.to_string(), "Task timed out after 1.00 seconds");
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_millis(1500),
        "the 1 s timeout ended the invocation after {took:?}"
    );

    let inv = invoke_ok(&pool, &echo, b"still here");
    assert_eq!(lossy(&inv.output), "still here");

    let (second, failure) = invoke_err(&pool, &looping, b"");
    assert!(matches!(failure, Failure::Timeout(_)), "{failure:?}");
    assert!(
        second.environment != first.environment && second.cold,
        "the timed-out environment {} was reused (second: {}, cold = {})",
        first.environment,
        second.environment,
        second.cold
    );
    assert_eq!(
        pool.total(),
        1,
        "only echo's environment should be left after two timeouts"
    );
}
