//! Running what control sends: a [`FunctionConfig`] becomes a [`FunctionSpec`] once per
//! version key (the module fetched through the cache, checked and hashed by
//! [`SpecBuilder::build`]), and each invocation runs on the pool with the role's
//! credentials added to that invocation's environment only, so credentials that rotate
//! never change which environments a version may reuse. The outcome becomes Lambda's
//! error types:
//!
//! | failure | status | `errorType` |
//! |---|---|---|
//! | non-zero exit | function error | `Runtime.ExitError` |
//! | trap | function error | `Runtime.Trap` |
//! | response over 6 MiB | function error | `Function.ResponseSizeTooLarge` |
//! | out of memory | function error | `Runtime.OutOfMemory` |
//! | init phase failed | function error | `Runtime.InitError` |
//! | timeout | function error | `Sandbox.Timedout` (`Task timed out after 3.00 seconds`) |
//! | environment crashed, bad module or settings | service error | — |

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ember_fleet::messages::{
    FunctionConfig, InventoryEntry, InvokeRequest, InvokeResponse, RoleCredentials, Status,
    VersionKey,
};

use crate::artifacts::{ArtifactCache, ArtifactError};
use crate::metrics::InvokeMetrics;
use ember_vmm::function::{Failure, FunctionSpec, Invocation, Isolation, Pool, SpecBuilder};
use tokio::task::JoinError;

/// A version's spec is forgotten once it has had no environment for this long.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Why a function version could not be set up or provisioned.
#[derive(Debug, thiserror::Error)]
pub enum VersionError {
    #[error("{0}")]
    Code(#[from] ArtifactError),
    #[error("{0}")]
    Failure(#[from] Failure),
    #[error("the pool's thread failed: {0}")]
    Thread(#[from] JoinError),
}

/// An invocation turned away before anything ran: this worker has no room for another
/// environment (its `--max-envs` or guest memory are in use, and no idle environment may
/// make way). Control tries another worker.
#[derive(Debug, thiserror::Error)]
#[error("at capacity: {0}")]
pub struct AtCapacity(pub String);

/// One version key's spec, built once.
#[derive(Default)]
struct Entry {
    spec: tokio::sync::OnceCell<Arc<FunctionSpec>>,
    last_used: Mutex<Option<Instant>>,
}

/// The functions this worker runs: the pool and what it needs to build specs.
pub struct Functions {
    pool: Arc<Pool>,
    artifacts: ArtifactCache,
    entries: Mutex<HashMap<VersionKey, Arc<Entry>>>,
    metrics: InvokeMetrics,
}

impl Functions {
    pub fn new(pool: Pool, artifacts: ArtifactCache) -> Functions {
        Functions {
            pool: Arc::new(pool),
            artifacts,
            entries: Mutex::default(),
            metrics: InvokeMetrics::default(),
        }
    }

    /// What [`Functions::invoke`] counts.
    pub fn metrics(&self) -> &InvokeMetrics {
        &self.metrics
    }

    /// The environment pool, for its gauges.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    fn entries(&self) -> MutexGuard<'_, HashMap<VersionKey, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs one invocation, or turns it away when this worker has no room for the
    /// environment it needs.
    pub async fn invoke(&self, request: InvokeRequest) -> Result<InvokeResponse, AtCapacity> {
        let started = Instant::now();
        let result = self.run(request).await;
        match &result {
            Ok(response) => self.metrics.record(response, started.elapsed()),
            Err(_) => self.metrics.record_refused(),
        }
        result
    }

    /// [`Functions::invoke`]'s work, without the bookkeeping around it.
    async fn run(&self, request: InvokeRequest) -> Result<InvokeResponse, AtCapacity> {
        let payload = match STANDARD.decode(&request.payload) {
            Ok(payload) => payload,
            Err(e) => return Ok(service_error(format!("the payload is not base64: {e}"))),
        };
        let spec = match self.spec(&request.function).await {
            Ok(spec) => spec,
            Err(e) => return Ok(service_error(e.to_string())),
        };
        let env = credentials_env(request.credentials.as_ref());
        let pool = self.pool.clone();
        match tokio::task::spawn_blocking(move || pool.invoke_with_env(&spec, &payload, &env)).await
        {
            Ok(Invocation {
                error: Some(Failure::AtCapacity(reason)),
                ..
            }) => Err(AtCapacity(reason)),
            Ok(invocation) => Ok(response(invocation)),
            Err(e) => Ok(service_error(format!(
                "the invocation's thread failed: {e}"
            ))),
        }
    }

    /// Keeps `count` initialized environments of the version ready.
    pub async fn provision(
        &self,
        function: &FunctionConfig,
        count: u32,
    ) -> Result<(), VersionError> {
        let spec = self.spec(function).await?;
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || pool.set_provisioned(&spec, count as usize)).await??;
        Ok(())
    }

    /// Stops keeping environments of `key` ready and shuts down the ones kept for it.
    pub async fn release(&self, key: &VersionKey) -> Result<(), VersionError> {
        let spec = self.entries().get(key).and_then(|e| e.spec.get().cloned());
        // Without a spec the version never had an environment here.
        let Some(spec) = spec else { return Ok(()) };
        let pool = self.pool.clone();
        tokio::task::spawn_blocking(move || pool.set_provisioned(&spec, 0)).await??;
        Ok(())
    }

    /// Environments per version for a heartbeat; forgets versions long without any.
    pub fn inventory(&self) -> Vec<InventoryEntry> {
        let mut inventory = Vec::new();
        self.entries().retain(|key, entry| {
            let Some(spec) = entry.spec.get() else {
                return true;
            };
            let stats = self.pool.stats(spec.key());
            if stats.idle + stats.busy > 0 {
                inventory.push(InventoryEntry {
                    key: key.clone(),
                    idle: stats.idle as u32,
                    busy: stats.busy as u32,
                });
                return true;
            }
            let last_used = *entry
                .last_used
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            last_used.is_some_and(|t| t.elapsed() < FORGET_AFTER)
        });
        inventory
    }

    /// Environments alive, every version.
    pub fn environments(&self) -> usize {
        self.pool.total()
    }

    /// The spec of `function`'s version key, built on first use (concurrent first uses
    /// wait for one build).
    async fn spec(&self, function: &FunctionConfig) -> Result<Arc<FunctionSpec>, VersionError> {
        let entry = self
            .entries()
            .entry(function.key.clone())
            .or_default()
            .clone();
        *entry
            .last_used
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Instant::now());
        entry
            .spec
            .get_or_try_init(|| async {
                let module = self.artifacts.module(&function.code).await?;
                let builder = SpecBuilder {
                    account: function.key.account.clone(),
                    name: function.key.function.clone(),
                    version: function.key.version.clone(),
                    handler: function.handler.clone(),
                    memory_mib: function.memory_mib,
                    timeout: Duration::from_millis(function.timeout_ms),
                    env: function.environment.clone().into_iter().collect(),
                    isolation: Isolation::Reuse,
                };
                Ok(tokio::task::spawn_blocking(move || builder.build(&module)).await??)
            })
            .await
            .cloned()
    }
}

/// The role's credentials as the AWS SDKs read them.
fn credentials_env(credentials: Option<&RoleCredentials>) -> Vec<(String, String)> {
    credentials
        .map(|c| {
            [
                ("AWS_ACCESS_KEY_ID", &c.access_key_id),
                ("AWS_SECRET_ACCESS_KEY", &c.secret_access_key),
                ("AWS_SESSION_TOKEN", &c.session_token),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.clone()))
            .collect()
        })
        .unwrap_or_default()
}

/// An invocation's outcome as control's answer.
fn response(invocation: Invocation) -> InvokeResponse {
    let (status, error_type, payload) = match &invocation.error {
        None => (Status::Success, None, invocation.output),
        Some(failure) => match function_error(failure) {
            Some((error_type, message)) => (
                Status::FunctionError,
                Some(error_type.to_owned()),
                error_body(error_type, &message),
            ),
            None => (
                Status::ServiceError,
                None,
                error_body("ServiceException", &failure.to_string()),
            ),
        },
    };
    InvokeResponse {
        status,
        payload: STANDARD.encode(payload),
        error_type,
        log_tail: String::from_utf8_lossy(&invocation.log_tail).into_owned(),
        log: String::from_utf8_lossy(&invocation.log).into_owned(),
        environment: invocation.environment,
        duration_us: invocation.duration.as_micros() as u64,
        init_us: invocation.init_duration.map(|d| d.as_micros() as u64),
        max_memory_used_mib: invocation.memory_used.div_ceil(1 << 20),
    }
}

/// Lambda's error type and message for a failure of the function's own making; `None`
/// for the platform's.
fn function_error(failure: &Failure) -> Option<(&'static str, String)> {
    Some(match failure {
        Failure::Function(message) if message.starts_with("exited with code") => {
            ("Runtime.ExitError", message.clone())
        }
        // The guest's words when it drops a response over the limit.
        Failure::Function(message) if message.starts_with("response of ") => {
            ("Function.ResponseSizeTooLarge", message.clone())
        }
        Failure::Function(message) => ("Runtime.Trap", message.clone()),
        Failure::OutOfMemory(message) => ("Runtime.OutOfMemory", message.clone()),
        Failure::Init(message) => ("Runtime.InitError", message.clone()),
        Failure::Timeout(_) => ("Sandbox.Timedout", failure.to_string()),
        Failure::InvalidConfig(_)
        | Failure::InvalidModule(_)
        | Failure::PayloadTooLarge(_)
        | Failure::AtCapacity(_)
        | Failure::Crashed(_) => return None,
    })
}

fn error_body(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "errorMessage": message,
        "errorType": error_type,
    }))
    .expect("a JSON object serializes")
}

fn service_error(message: String) -> InvokeResponse {
    log::warn!("invocation failed: {message}");
    InvokeResponse {
        status: Status::ServiceError,
        payload: STANDARD.encode(error_body("ServiceException", &message)),
        error_type: None,
        log_tail: String::new(),
        log: String::new(),
        environment: 0,
        duration_us: 0,
        init_us: None,
        max_memory_used_mib: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_vmm::function::EnvError;

    #[test]
    fn failures_map_to_lambdas_error_types() {
        let cases = [
            (
                Failure::Function("exited with code 1".into()),
                Some("Runtime.ExitError"),
            ),
            (
                Failure::Function("response of 7000000 bytes exceeds the limit".into()),
                Some("Function.ResponseSizeTooLarge"),
            ),
            (
                Failure::Function("wasm trap: unreachable".into()),
                Some("Runtime.Trap"),
            ),
            (
                Failure::OutOfMemory("out of memory".into()),
                Some("Runtime.OutOfMemory"),
            ),
            (Failure::Init("trap".into()), Some("Runtime.InitError")),
            (
                Failure::Timeout(Duration::from_secs(3)),
                Some("Sandbox.Timedout"),
            ),
            (Failure::from(EnvError::NotConnected), None),
            (Failure::InvalidModule("bad".into()), None),
        ];
        for (failure, expected) in cases {
            assert_eq!(
                function_error(&failure).map(|(t, _)| t),
                expected,
                "{failure:?}"
            );
        }
        let (_, message) = function_error(&Failure::Timeout(Duration::from_secs(3))).unwrap();
        assert_eq!(message, "Task timed out after 3.00 seconds");
        let env = credentials_env(Some(&RoleCredentials {
            access_key_id: "ASIA1".into(),
            secret_access_key: "s".into(),
            session_token: "t".into(),
            expiration: 1,
        }));
        assert_eq!(env.len(), 3);
        assert!(credentials_env(None).is_empty());
    }
}
