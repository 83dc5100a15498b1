//! The JSON messages of the fleet protocol. Field names are snake_case; byte strings
//! (payloads, responses) are standard base64; times are Unix seconds unless named `_ms` or
//! `_us`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// What a worker can hold.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capacity {
    pub vcpus: u32,
    /// Guest memory it may hand out, in MiB.
    pub memory_mib: u64,
    pub max_environments: u32,
}

/// `POST` [`crate::REGISTER`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterRequest {
    /// A join token control issued: `ID.SECRET` from `ember worker token create`, or the
    /// bootstrap token of `DIR/worker-token`.
    pub token: String,
    /// A name for logs and `ember` output (e.g. the host name).
    pub name: String,
    /// A PKCS#10 request (PEM) for the key the worker made; control signs it.
    pub csr_pem: String,
    /// Where control reaches the worker API: `host:port`.
    pub address: String,
    pub capacity: Capacity,
}

/// The answer to a registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RegisterResponse {
    pub worker_id: String,
    /// The worker's certificate, signed by control's fleet CA and named
    /// [`crate::tls::worker_name`] of its id, for both its worker API (server) and its
    /// requests to control (client).
    pub certificate_pem: String,
    /// Control's fleet CA: the only issuer the worker trusts for who calls its API.
    pub ca_pem: String,
    pub lease_expires_at: u64,
    pub heartbeat_interval_ms: u64,
}

/// Which environments are interchangeable: one account's one function version with one
/// configuration. `config_digest` is control's digest of the code and every setting an
/// environment depends on (hex), so a configuration change never reuses an environment.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct VersionKey {
    pub account: String,
    pub function: String,
    pub version: String,
    pub config_digest: String,
}

/// Environments of one version on a worker.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct InventoryEntry {
    pub key: VersionKey,
    pub idle: u32,
    pub busy: u32,
}

/// `POST` [`crate::HEARTBEAT`].
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    pub inventory: Vec<InventoryEntry>,
    /// Invocations running now.
    pub in_flight: u32,
    /// Environments alive (idle or busy).
    pub environments: u32,
    /// True once the worker stopped taking invocations (its lease is ending).
    pub draining: bool,
    /// Provisioned versions whose environments cannot be created here, while that lasts
    /// (absent from workers that predate it).
    #[serde(default)]
    pub provision_failures: Vec<ProvisionFailure>,
}

/// A provisioned version this worker cannot create environments of: control reports its
/// configuration `FAILED` with `reason` rather than in progress forever.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionFailure {
    pub key: VersionKey,
    /// Why: the init phase's error, or why the code could not be fetched.
    pub reason: String,
}

/// The answer to a heartbeat.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct HeartbeatResponse {
    pub lease_expires_at: u64,
    /// Finish what is running, take nothing new, deregister and exit.
    pub drain: bool,
    /// Versions this worker should keep initialized environments of, and how many.
    pub provisioned: Vec<Provisioned>,
}

/// A provisioned-concurrency share placed on one worker.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Provisioned {
    pub function: FunctionConfig,
    pub count: u32,
}

/// The code of a function version, and the grant to fetch it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodeRef {
    pub account: String,
    /// What the worker's cache is keyed by: an artifact id names one module forever
    /// (artifacts are immutable), so no digest of the module is needed to tell them apart.
    pub artifact_id: String,
    /// A time-limited grant for exactly this artifact.
    pub grant: String,
}

/// Everything a worker needs to create an environment of a version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub key: VersionKey,
    pub code: CodeRef,
    /// The reactor's export (Lambda's `Handler`).
    pub handler: String,
    pub memory_mib: u32,
    pub timeout_ms: u64,
    /// The function's variables plus Lambda-style metadata (`AWS_LAMBDA_FUNCTION_NAME`, …).
    pub environment: BTreeMap<String, String>,
}

/// Temporary credentials of the function's execution role.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    pub expiration: u64,
}

/// `POST` [`crate::INVOKE`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvokeRequest {
    pub request_id: String,
    pub function: FunctionConfig,
    pub credentials: Option<RoleCredentials>,
    /// The event (base64).
    pub payload: String,
}

/// How an invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Success,
    /// The function failed: non-zero exit, trap, out of memory, timeout, init failure.
    FunctionError,
    /// The platform could not run it (bad code, the worker failed).
    ServiceError,
}

/// The answer to an invocation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct InvokeResponse {
    pub status: Status,
    /// The response (base64): the function's output, or for errors Lambda's
    /// `{"errorType", "errorMessage"}` object.
    pub payload: String,
    /// Lambda's error type for function errors (`Runtime.ExitError`, `Sandbox.Timedout`…).
    pub error_type: Option<String>,
    /// The last 4 KiB of the function's log (stderr).
    pub log_tail: String,
    /// The invocation's whole log (stderr), with the init phase's on the cold start that
    /// ran it: at most 256 KiB, beyond that its start and end around `[log truncated]`.
    #[serde(default)]
    pub log: String,
    /// Which execution environment ran it (unique on its worker; 0 when none did), for
    /// per-environment log streams.
    #[serde(default)]
    pub environment: u64,
    pub duration_us: u64,
    /// Set on cold starts: how long the environment took to create and initialize.
    pub init_us: Option<u64>,
    pub max_memory_used_mib: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_is_snake_case_on_the_wire() {
        assert_eq!(
            serde_json::to_string(&Status::FunctionError).unwrap(),
            "\"function_error\""
        );
    }
}
