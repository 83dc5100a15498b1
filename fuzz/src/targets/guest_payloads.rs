//! The payloads inside frames: what a guest answers (`Outcome`, `GuestInfo`), which the
//! host decodes, and what the host sends (`LoadRequest`, `InvokeRequest`), which the guest
//! decodes.
//!
//! Invariant: whatever decodes re-encodes to bytes that decode to the same value.

use ember_wire::function::{InvokeRequest, LoadRequest, Outcome, Status};
use ember_wire::info::GuestInfo;

use crate::Target;

pub const TARGET: Target = Target {
    name: "guest_payloads",
    fed_by: "a guest (outcomes, info) or the host (load and invoke requests)",
    seeds,
    dictionary: &[
        &[0, 0, 0, 0],
        &[0xff, 0xff, 0xff, 0xff],
        &[1, 0, 0, 0, 0, 0, 0, 0],
    ],
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    let load = LoadRequest {
        handler: "handle".into(),
        env: vec![("A".into(), "1".into())],
        seed: [9; 32],
        now_unix_ns: 1,
        memory_limit: 1 << 20,
        module: b"\0asm\x01\0\0\0".to_vec(),
    };
    let invoke = InvokeRequest {
        now_unix_ns: 2,
        seed: [3; 32],
        env: vec![("AWS_REGION".into(), "local".into())],
        payload: b"{\"x\":1}".to_vec(),
    };
    let outcome = Outcome {
        status: Status::Success,
        module_kind: 1,
        duration_ns: 1000,
        memory_used: 65536,
        error: String::new(),
        output: b"out".to_vec(),
        log_tail: b"log".to_vec(),
    };
    let info = GuestInfo {
        version: "0.1.0".into(),
        mem_size: 1 << 27,
        heap_size: 1 << 26,
        cpl: 3,
    };
    vec![
        [vec![0], outcome.encode()].concat(),
        [vec![1], info.encode()].concat(),
        [vec![2], load.encode()].concat(),
        [vec![3], invoke.encode()].concat(),
    ]
}

/// The first byte picks the payload type.
fn run(input: &[u8]) -> String {
    let Some((&which, bytes)) = input.split_first() else {
        return "empty".to_owned();
    };
    match which % 4 {
        0 => round_trip(
            "outcome",
            bytes,
            |b| Outcome::decode(b).ok(),
            Outcome::encode,
        ),
        1 => round_trip("info", bytes, GuestInfo::decode, GuestInfo::encode),
        2 => round_trip(
            "load",
            bytes,
            |b| LoadRequest::decode(b).ok(),
            LoadRequest::encode,
        ),
        _ => round_trip(
            "invoke",
            bytes,
            |b| InvokeRequest::decode(b).ok(),
            InvokeRequest::encode,
        ),
    }
}

fn round_trip<T: PartialEq + std::fmt::Debug>(
    name: &str,
    bytes: &[u8],
    decode: impl Fn(&[u8]) -> Option<T>,
    encode: impl Fn(&T) -> Vec<u8>,
) -> String {
    let Some(value) = decode(bytes) else {
        return format!("{name}:refused");
    };
    let again = decode(&encode(&value));
    assert_eq!(again.as_ref(), Some(&value), "{name} does not round-trip");
    format!("{name}:ok")
}
