//! The invoke path inside control, shared by every way of invoking (the synchronous API
//! and the asynchronous event queue): resolve the qualifier to a version (an alias's
//! weights by a random draw), take a slot under the function's reserved concurrency or,
//! without one, its account's unreserved pool (the fleet's in-flight counts), describe the version to a worker (the fleet's
//! function config), pick a worker ([`pick`]) and run it there with a grant for its code
//! and its role's credentials, both issued to that worker.
//!
//! A worker that cannot be reached, or turns the invocation away before running it, costs
//! nothing: the next best worker gets it (up to [`ATTEMPTS`] workers). One that is
//! unreachable or draining is taken out of routing until its next heartbeat; one that says
//! it has no room (all its environments busy, or its memory in use) only counts as full
//! until then. When every worker tried was full the invocation is throttled
//! ([`InvokeError::NoCapacity`]) rather than failed: trying again later helps. A worker that fails
//! after the request went out may have run it: that invocation fails with
//! [`InvokeError::WorkerFailed`] (nothing else is affected) and the worker is marked dead
//! until its next heartbeat.

pub mod pick;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ember_fleet::messages::{self, InvokeRequest, InvokeResponse, Status};
use ember_wire::function::LOG_TAIL;

use crate::fleet::client::CallError;
use crate::fleet::function_config::{self as config, GRANT_LIFETIME};
use crate::fleet::Fleet;
use crate::logs;
use crate::logs::Logs;
use crate::metrics::{Metrics, Outcome};
use ember_core::clock;
use ember_core::grants::Holder;
use ember_core::names::LATEST;
use ember_core::random;
use ember_core::roles::RoleIssuer;
use ember_store::aliases::{self, Routing};
use ember_store::concurrency::{self, InvokeLimit};
use ember_store::functions::{self, Version};
use ember_store::workers::{self as worker_store, WorkerState};
use ember_store::Registry;

/// What the invoke path needs: the store, the fleet (its workers, in-flight counts, code
/// grants and region), the issuer of role credentials, and where logs and metrics go.
#[derive(Debug)]
pub struct Invoker {
    pub registry: Registry,
    pub fleet: Arc<Fleet>,
    pub roles: Arc<RoleIssuer>,
    pub logs: Arc<Logs>,
    pub metrics: Arc<Metrics>,
}

/// Time allowed beyond the function's timeout for fetching code, creating the environment
/// and the round trip.
const CALL_MARGIN: Duration = Duration::from_secs(30);

/// Workers tried for one invocation when the first ones cannot take it.
pub const ATTEMPTS: usize = 3;

/// One invocation to run.
#[derive(Clone, Debug)]
pub struct Invocation {
    pub account: String,
    pub function: String,
    /// A version, an alias, or `None` for `$LATEST`.
    pub qualifier: Option<String>,
    /// The event.
    pub payload: Vec<u8>,
    pub request_id: String,
}

/// How an invocation ended, on a worker.
#[derive(Clone, Debug)]
pub struct Invoked {
    /// The version that ran (an alias resolves to one).
    pub version: String,
    pub worker_id: String,
    pub status: Status,
    /// The response, or Lambda's error object for function errors.
    pub payload: Vec<u8>,
    /// Lambda's error type for function errors.
    pub error_type: Option<String>,
    /// The end of the function's log.
    pub log_tail: String,
    /// Set when the invocation started a new environment (a cold start): how long creating
    /// and initializing it took, in microseconds.
    pub init_us: Option<u64>,
}

/// Why an invocation did not run to an answer.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error("the function, version or alias does not exist")]
    NotFound,
    #[error("{}", throttle_reason(.limit))]
    Throttled { limit: InvokeLimit },
    #[error("no worker is available to run the function")]
    NoWorker,
    #[error("no worker has room for another environment of the function")]
    NoCapacity,
    #[error("the worker running the invocation failed: {0}")]
    WorkerFailed(String),
    #[error("{0}")]
    Internal(String),
}

/// Why an invocation under `limit` was throttled.
fn throttle_reason(limit: &InvokeLimit) -> String {
    match limit {
        InvokeLimit::Reserved(n) => format!("the function's reserved concurrency ({n}) is used up"),
        InvokeLimit::Unreserved(n) => {
            format!("the account's unreserved concurrency ({n}) is used up")
        }
    }
}

impl From<sqlx::Error> for InvokeError {
    fn from(e: sqlx::Error) -> InvokeError {
        tracing::error!(error = %e, "registry error on the invoke path");
        InvokeError::Internal(format!("registry: {e}"))
    }
}

/// The version an invocation of `function` with `qualifier` runs: itself for a version,
/// for an alias its primary version or, with the alias's weight, its additional one.
pub async fn target(
    invoker: &Invoker,
    account: &str,
    function: &str,
    qualifier: Option<&str>,
) -> Result<Version, InvokeError> {
    let routing = aliases::resolve(
        invoker.registry.pool(),
        account,
        function,
        qualifier.unwrap_or(LATEST),
    )
    .await?
    .ok_or(InvokeError::NotFound)?;
    let version = choose_version(&routing, draw()?);
    functions::get_version(&invoker.registry, account, function, version)
        .await?
        .ok_or(InvokeError::NotFound)
}

/// Runs `invocation` on a worker and returns its answer.
pub async fn invoke(invoker: &Invoker, invocation: Invocation) -> Result<Invoked, InvokeError> {
    let started = Instant::now();
    let (account, function) = (invocation.account.clone(), invocation.function.clone());
    let result = run(invoker, invocation).await;
    let took = started.elapsed();
    let cold_start = result
        .as_ref()
        .is_ok_and(|invoked| invoked.init_us.is_some());
    invoker
        .metrics
        .record_invocation(&account, &function, outcome(&result), cold_start, took);
    result
}

/// The `outcome` label of an invocation that ended with `result`.
pub fn outcome(result: &Result<Invoked, InvokeError>) -> Outcome {
    match result {
        Ok(invoked) => match invoked.status {
            Status::Success => Outcome::Success,
            Status::FunctionError => Outcome::FunctionError,
            Status::ServiceError => Outcome::ServiceError,
        },
        Err(InvokeError::NotFound) => Outcome::NotFound,
        Err(InvokeError::Throttled { .. }) => Outcome::Throttled,
        Err(InvokeError::NoWorker) => Outcome::NoWorker,
        Err(InvokeError::NoCapacity) => Outcome::NoCapacity,
        Err(InvokeError::WorkerFailed(_)) => Outcome::WorkerFailed,
        Err(InvokeError::Internal(_)) => Outcome::InternalError,
    }
}

/// [`invoke`]'s work, without the bookkeeping around it.
async fn run(invoker: &Invoker, invocation: Invocation) -> Result<Invoked, InvokeError> {
    let Invocation {
        account,
        function,
        qualifier,
        payload,
        request_id,
    } = invocation;
    let version = target(invoker, &account, &function, qualifier.as_deref()).await?;
    let limit = concurrency::invoke_limit(invoker.registry.pool(), &account, &function).await?;
    let _slot = invoker
        .fleet
        .in_flight
        .acquire(&account, &function, limit)
        .ok_or(InvokeError::Throttled { limit })?;
    let client = invoker.fleet.client().ok_or(InvokeError::NoWorker)?;

    let now = clock::now_unix();
    // The code grant and the role's credentials are issued to each worker tried, below.
    let mut request = InvokeRequest {
        request_id,
        function: config::function_config(&version, &invoker.fleet.region, String::new()),
        credentials: None,
        payload: STANDARD.encode(&payload),
    };
    let timeout = Duration::from_secs(u64::try_from(version.config.timeout).unwrap_or(0))
        .saturating_add(CALL_MARGIN);

    let fleet = &invoker.fleet;
    let key = &request.function.key;
    let memory_mib = u64::try_from(version.config.memory_size).unwrap_or(u64::MAX);
    let mut tried = Vec::new();
    let mut full = 0;
    while tried.len() < ATTEMPTS {
        let criteria = pick::Criteria {
            key,
            now,
            settings: &fleet.settings,
            memory_mib,
            exclude: &tried,
        };
        let Some(claim) = fleet
            .workers
            .claim(key, memory_mib, |workers| pick::choose(workers, &criteria))
        else {
            break;
        };
        let (grant, credentials) = handed_to(invoker, &version, &claim.worker_id, now)?;
        request.function.code.grant = grant;
        request.credentials = Some(credentials);
        match client
            .invoke(&claim.worker_id, &claim.address, &request, timeout)
            .await
        {
            Ok(mut response) => {
                let worker_id = claim.worker_id.clone();
                claim.finish(response.status == Status::Success);
                response.log_tail = record_log(
                    invoker,
                    &account,
                    &function,
                    &version,
                    &request.request_id,
                    &worker_id,
                    &response,
                );
                return answer(version.version, worker_id, response);
            }
            Err(CallError::Unavailable(reason)) => {
                tracing::warn!(worker = %claim.worker_id, %reason, "worker unavailable; trying another");
                suspect(invoker, &claim.worker_id).await;
                tried.push(claim.worker_id.clone());
            }
            Err(CallError::AtCapacity(reason)) => {
                tracing::info!(worker = %claim.worker_id, %reason, "worker full; trying another");
                tried.push(claim.worker_id.clone());
                claim.refused();
                full += 1;
            }
            Err(CallError::Failed(reason)) => {
                tracing::error!(worker = %claim.worker_id, %reason, "worker failed mid-invocation");
                suspect(invoker, &claim.worker_id).await;
                return Err(InvokeError::WorkerFailed(reason));
            }
        }
    }
    if full > 0 && full == tried.len() {
        return Err(InvokeError::NoCapacity);
    }
    Err(InvokeError::NoWorker)
}

/// What worker `worker` is handed to run `version` at `now`, issued to it alone: a grant
/// for the code and the execution role's credentials.
fn handed_to(
    invoker: &Invoker,
    version: &Version,
    worker: &str,
    now: u64,
) -> Result<(String, messages::RoleCredentials), InvokeError> {
    let account = &version.account_id;
    let grant = invoker
        .fleet
        .grants
        .issue(
            account,
            &version.code.artifact_id,
            Holder::Worker(worker),
            now + GRANT_LIFETIME,
        )
        .map_err(|e| InvokeError::Internal(e.to_string()))?;
    let credentials = invoker
        .roles
        .credentials(account, &version.config.role, worker, now)
        .map_err(|e| InvokeError::Internal(format!("execution role credentials: {e}")))?;
    let credentials = messages::RoleCredentials {
        access_key_id: credentials.access_key_id,
        secret_access_key: credentials.secret_access_key,
        session_token: credentials.session_token,
        expiration: credentials.expires_at,
    };
    Ok((grant, credentials))
}

/// Stores the invocation's log (`START` … `REPORT`) and returns its last 4 KiB, which is
/// what `LogType: Tail` shows, as Lambda's does. A service error ran no function: no log.
fn record_log(
    invoker: &Invoker,
    account: &str,
    function: &str,
    version: &Version,
    request_id: &str,
    worker_id: &str,
    response: &InvokeResponse,
) -> String {
    if response.status == Status::ServiceError {
        return String::new();
    }
    let ran = logs::format::Ran {
        request_id,
        version: &version.version,
        memory_mib: version.config.memory_size,
        worker_id,
        response,
    };
    let text = invoker.logs.record(account, function, &ran);
    logs::format::tail(&text, LOG_TAIL).to_owned()
}

/// The version an alias's routing sends a draw in [0, 1) to.
fn choose_version(routing: &Routing, draw: f64) -> &str {
    match &routing.additional {
        Some((version, weight)) if draw < *weight => version,
        _ => &routing.primary,
    }
}

/// A uniform random number in [0, 1).
fn draw() -> Result<f64, InvokeError> {
    let bytes = random::bytes::<8>().map_err(|e| InvokeError::Internal(e.to_string()))?;
    // The top 53 bits: every value exactly representable.
    Ok((u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64)
}

/// Takes worker `id` out of routing until it heartbeats again.
async fn suspect(invoker: &Invoker, id: &str) {
    if invoker.fleet.workers.set_state(id, WorkerState::Dead) {
        if let Err(e) =
            worker_store::set_state(invoker.registry.pool(), id, WorkerState::Dead).await
        {
            tracing::warn!(worker = %id, error = %e, "could not record the worker as dead");
        }
    }
}

fn answer(
    version: String,
    worker_id: String,
    response: InvokeResponse,
) -> Result<Invoked, InvokeError> {
    let payload = STANDARD.decode(&response.payload).map_err(|e| {
        InvokeError::WorkerFailed(format!("the worker's response is not base64: {e}"))
    })?;
    Ok(Invoked {
        version,
        worker_id,
        status: response.status,
        payload,
        error_type: response.error_type,
        log_tail: response.log_tail,
        init_us: response.init_us,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn invoked(status: Status, init_us: Option<u64>) -> Result<Invoked, InvokeError> {
        Ok(Invoked {
            version: "1".into(),
            worker_id: "w-1".into(),
            status,
            payload: Vec::new(),
            error_type: None,
            log_tail: String::new(),
            init_us,
        })
    }

    #[test]
    fn outcomes_name_how_an_invocation_ended() {
        let cases = [
            (invoked(Status::Success, None), "success"),
            (invoked(Status::FunctionError, None), "function_error"),
            (invoked(Status::ServiceError, None), "service_error"),
            (Err(InvokeError::NotFound), "not_found"),
            (
                Err(InvokeError::Throttled {
                    limit: InvokeLimit::Reserved(0),
                }),
                "throttled",
            ),
            (Err(InvokeError::NoWorker), "no_worker"),
            (Err(InvokeError::NoCapacity), "no_capacity"),
            (Err(InvokeError::WorkerFailed("x".into())), "worker_failed"),
            (Err(InvokeError::Internal("x".into())), "internal_error"),
        ];
        for (result, expected) in cases {
            assert_eq!(outcome(&result).as_str(), expected, "{result:?}");
        }
    }

    #[test]
    fn weighted_aliases_split_by_the_draw() {
        let routing = Routing {
            primary: "1".into(),
            additional: Some(("2".into(), 0.25)),
        };
        assert_eq!(choose_version(&routing, 0.0), "2");
        assert_eq!(choose_version(&routing, 0.2499), "2");
        assert_eq!(choose_version(&routing, 0.25), "1");
        let never = Routing {
            primary: "1".into(),
            additional: Some(("2".into(), 0.0)),
        };
        assert_eq!(choose_version(&never, 0.0), "1");
        for _ in 0..100 {
            let d = draw().unwrap();
            assert!((0.0..1.0).contains(&d));
        }
    }
}
