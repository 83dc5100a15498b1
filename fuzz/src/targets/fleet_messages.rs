//! The fleet protocol's JSON messages, as control reads them from workers (registrations,
//! heartbeats, invocation answers) and workers read them from control.
//!
//! Invariant: whatever parses serializes to JSON that parses to the same message.

use ember_fleet::messages::{
    HeartbeatRequest, HeartbeatResponse, InvokeRequest, InvokeResponse, RegisterRequest,
    RegisterResponse,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::Target;

pub const TARGET: Target = Target {
    name: "fleet_messages",
    fed_by: "a worker, or anyone holding a join token (control side); control (worker side)",
    seeds,
    dictionary: &[
        b"{",
        b"}",
        b"[",
        b"]",
        b"\"",
        b":",
        b",",
        b"null",
        b"4294967295",
        b"18446744073709551616",
        b"-1",
        b"1e999",
        b"\\u0000",
        b"\\ud800",
    ],
    run,
};

const KEY: &str = r#"{"account":"1","function":"f","version":"$LATEST","config_digest":"ab"}"#;

fn seeds() -> Vec<Vec<u8>> {
    let function = format!(
        r#"{{"key":{KEY},"code":{{"account":"1","artifact_id":"a","grant":"g"}},"handler":"handle","memory_mib":128,"timeout_ms":3000,"environment":{{"A":"1"}}}}"#
    );
    let messages = [
        r#"{"token":"t","name":"w","csr_pem":"-----BEGIN","address":"vsock://3:9445","capacity":{"vcpus":2,"memory_mib":2048,"max_environments":100}}"#.to_owned(),
        r#"{"worker_id":"w1","certificate_pem":"c","ca_pem":"ca","lease_expires_at":1,"heartbeat_interval_ms":1000}"#.to_owned(),
        format!(r#"{{"inventory":[{{"key":{KEY},"idle":1,"busy":0}}],"in_flight":0,"environments":1,"draining":false,"provision_failures":[{{"key":{KEY},"reason":"r"}}]}}"#),
        format!(r#"{{"lease_expires_at":1,"drain":false,"provisioned":[{{"function":{function},"count":2}}]}}"#),
        format!(r#"{{"request_id":"r","function":{function},"credentials":{{"access_key_id":"a","secret_access_key":"s","session_token":"t","expiration":1}},"payload":"e30="}}"#),
        r#"{"status":"function_error","payload":"","error_type":"Sandbox.Timedout","log_tail":"","log":"","environment":3,"duration_us":10,"init_duration_us":null}"#.to_owned(),
    ];
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| [vec![i as u8], m.clone().into_bytes()].concat())
        .collect()
}

/// The first byte picks the message type.
fn run(input: &[u8]) -> String {
    let Some((&which, json)) = input.split_first() else {
        return "empty".to_owned();
    };
    match which % 6 {
        0 => round_trip::<RegisterRequest>("register", json),
        1 => round_trip::<RegisterResponse>("register_response", json),
        2 => round_trip::<HeartbeatRequest>("heartbeat", json),
        3 => round_trip::<HeartbeatResponse>("heartbeat_response", json),
        4 => round_trip::<InvokeRequest>("invoke", json),
        _ => round_trip::<InvokeResponse>("invoke_response", json),
    }
}

fn round_trip<T: Serialize + DeserializeOwned>(name: &str, json: &[u8]) -> String {
    let Ok(message) = serde_json::from_slice::<T>(json) else {
        return format!("{name}:refused");
    };
    let first = serde_json::to_value(&message).expect("a parsed message serializes");
    let again: T = serde_json::from_value(first.clone()).expect("serialized JSON parses back");
    let second = serde_json::to_value(&again).expect("serializes");
    assert_eq!(first, second, "{name} does not round-trip");
    format!("{name}:ok")
}
