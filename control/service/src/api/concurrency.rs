//! Lambda's concurrency operations. Reserved concurrency (Put/Get/DeleteFunctionConcurrency)
//! caps a function and sets that much aside from the account's pool; provisioned
//! concurrency (Put/Get/Delete/ListProvisionedConcurrencyConfig(s)) keeps initialized
//! environments ready for a published version or an alias.
//!
//! Each write runs in a transaction that first locks the account, so the rules that span
//! rows hold under concurrent requests: the account keeps
//! [`store::MIN_UNRESERVED_CONCURRENCY`] of [`store::ACCOUNT_CONCURRENCY_LIMIT`]
//! unreserved, a function's provisioned total fits in its reservation, and no version is
//! provisioned both directly and through an alias.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::api::error::ApiError;
use crate::api::paging::Page;
use crate::api::request::{required, FunctionName, JsonBody, Params};
use crate::api::shapes::FunctionsQuery;
use crate::api::subject::Subject;
use crate::api::target::{self, LATEST};
use crate::fleet::provision::ConfigId;
use crate::service::{Principal, Service};
use ember_core::clock;
use ember_store::aliases::{self as alias_store, Alias, Routing};
use ember_store::concurrency::{self as store, ProvisionedConfig};
use ember_store::functions::is_number;

/// Lambda's message for provisioned concurrency on `$LATEST`, directly or via an alias.
const UNPUBLISHED: &str =
    "Provisioned Concurrency Configs cannot be applied to unpublished function versions.";

/// Lambda's message when an alias would provision a version that has its own config.
const ALIAS_ON_PROVISIONED_VERSION: &str =
    "Alias can't be used for Provisioned Concurrency configuration on an already Provisioned version";

/// The concurrency routes (their API dates are Lambda's: reserved concurrency is written
/// under 2017-10-31 and read under 2019-09-30).
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route(
            "/2017-10-31/functions/{function}/concurrency",
            put(put_reserved).delete(delete_reserved),
        )
        .route(
            "/2019-09-30/functions/{function}/concurrency",
            get(get_reserved),
        )
        .route(
            "/2019-09-30/functions/{function}/provisioned-concurrency",
            put(put_provisioned)
                .get(get_provisioned)
                .delete(delete_provisioned),
        )
}

/// Lambda's `Concurrency` (and the PutFunctionConcurrency body).
#[derive(Debug, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Concurrency {
    #[serde(skip_serializing_if = "Option::is_none")]
    reserved_concurrent_executions: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ProvisionedRequest {
    provisioned_concurrent_executions: Option<i64>,
}

/// One provisioned configuration as Lambda reports it, allocation included: the
/// environments its shares hold on the workers, as their heartbeats report them
/// ([`crate::fleet::provision`]). `READY` once all are there, `FAILED` (with a
/// `StatusReason`) while part of it fits on no live worker or a worker holding part of it
/// cannot initialize its environments, `IN_PROGRESS` otherwise.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ProvisionedStatus {
    /// In list items only: the version's or alias's ARN.
    #[serde(skip_serializing_if = "Option::is_none")]
    function_arn: Option<String>,
    requested_provisioned_concurrent_executions: i64,
    available_provisioned_concurrent_executions: i64,
    allocated_provisioned_concurrent_executions: i64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    status_reason: Option<String>,
    last_modified: String,
}

impl ProvisionedStatus {
    fn new(
        service: &Service,
        subject: &Subject,
        config: ProvisionedConfig,
        function_arn: Option<String>,
    ) -> ProvisionedStatus {
        let id = ConfigId {
            account: subject.account.clone(),
            function: subject.name.clone(),
            qualifier: config.qualifier.clone(),
        };
        let allocation = service
            .fleet
            .provisioned
            .allocation(&id, &service.fleet.workers)
            .unwrap_or_default();
        let requested = config.requested;
        let allocated = i64::from(allocation.allocated).min(requested);
        let available = i64::from(allocation.available).min(allocated);
        let (status, status_reason) = if allocation.unplaced > 0 {
            let reason = format!(
                "Insufficient capacity: {} of {requested} provisioned environments fit on no \
                 live worker",
                allocation.unplaced
            );
            ("FAILED", Some(reason))
        } else if allocated == requested {
            ("READY", None)
        } else if let Some(failure) = allocation.failure {
            let reason = format!(
                "FUNCTION_ERROR_INIT_FAILED: the function's environments could not be \
                 initialized: {failure}"
            );
            ("FAILED", Some(reason))
        } else {
            ("IN_PROGRESS", None)
        };
        ProvisionedStatus {
            function_arn,
            requested_provisioned_concurrent_executions: requested,
            available_provisioned_concurrent_executions: available,
            allocated_provisioned_concurrent_executions: allocated,
            status,
            status_reason,
            last_modified: config.last_modified,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListProvisionedResponse {
    provisioned_concurrency_configs: Vec<ProvisionedStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

async fn put_reserved(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    JsonBody(request): JsonBody<Concurrency>,
) -> Result<Json<Concurrency>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    let reserved = required(
        request.reserved_concurrent_executions,
        "reservedConcurrentExecutions",
    )?;
    if reserved < 0 {
        return Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{reserved}' at 'reservedConcurrentExecutions' \
             failed to satisfy constraint: Member must have value greater than or equal to 0"
        )));
    }

    let mut tx = service.registry.pool().begin().await?;
    store::lock_account(&mut tx, &subject.account).await?;
    if store::reservation(&mut *tx, &subject.account, &subject.name)
        .await?
        .is_none()
    {
        return Err(subject.not_found());
    }
    let provisioned = provisioned_total(&mut tx, &subject).await?;
    if reserved < provisioned {
        return Err(ApiError::invalid_parameter(format!(
            "Specified ReservedConcurrentExecutions for function is less than the function's \
             total provisioned concurrency [{provisioned}]."
        )));
    }
    let elsewhere = store::committed_elsewhere(&mut *tx, &subject.account, &subject.name).await?;
    if elsewhere + reserved > reservable() {
        return Err(ApiError::invalid_parameter(format!(
            "Specified ReservedConcurrentExecutions for function decreases account's \
             UnreservedConcurrentExecution below its minimum value of [{}].",
            store::MIN_UNRESERVED_CONCURRENCY
        )));
    }
    store::set_reserved(&mut *tx, &subject.account, &subject.name, Some(reserved)).await?;
    tx.commit().await?;
    Ok(Json(Concurrency {
        reserved_concurrent_executions: Some(reserved),
    }))
}

async fn get_reserved(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
) -> Result<Json<Concurrency>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    let reserved = store::reservation(service.registry.pool(), &subject.account, &subject.name)
        .await?
        .ok_or_else(|| subject.not_found())?;
    Ok(Json(Concurrency {
        reserved_concurrent_executions: reserved,
    }))
}

/// Removing a reservation never breaks a rule: the function's provisioned concurrency
/// (at most its reservation) simply moves into the unreserved pool.
async fn delete_reserved(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
) -> Result<StatusCode, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    if store::set_reserved(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        None,
    )
    .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(subject.not_found())
    }
}

async fn put_provisioned(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
    JsonBody(request): JsonBody<ProvisionedRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let (subject, qualifier) = provisioned_subject(&function, query, &principal, &service)?;
    if qualifier == LATEST {
        return Err(ApiError::invalid_parameter(UNPUBLISHED));
    }
    let requested = required(
        request.provisioned_concurrent_executions,
        "provisionedConcurrentExecutions",
    )?;
    if requested < 1 {
        return Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{requested}' at \
             'provisionedConcurrentExecutions' failed to satisfy constraint: Member must have \
             value greater than or equal to 1"
        )));
    }

    let mut tx = service.registry.pool().begin().await?;
    store::lock_account(&mut tx, &subject.account).await?;
    let reserved = store::reservation(&mut *tx, &subject.account, &subject.name)
        .await?
        .ok_or_else(|| subject.not_found())?;
    let configs =
        store::list_provisioned(&mut *tx, &subject.account, &subject.name, "", i64::MAX).await?;
    match target(&mut tx, &subject, &qualifier).await? {
        Some(alias) => check_alias_overlap(&alias.routing, &configs)?,
        None => check_version_overlap(&mut tx, &subject, &qualifier, &configs).await?,
    }
    let others: i64 = configs
        .iter()
        .filter(|c| c.qualifier != qualifier)
        .map(|c| c.requested)
        .sum();
    match reserved {
        Some(reserved) if others + requested > reserved => {
            return Err(ApiError::invalid_parameter(
                "Requested Provisioned Concurrency should not be greater than the \
                 reservedConcurrentExecution for function",
            ));
        }
        Some(_) => {}
        // Without a reservation, provisioned concurrency comes out of the unreserved pool.
        None => {
            let elsewhere =
                store::committed_elsewhere(&mut *tx, &subject.account, &subject.name).await?;
            if elsewhere + others + requested > reservable() {
                return Err(ApiError::invalid_parameter(format!(
                    "Specified ConcurrentExecutions for function decreases account's \
                     UnreservedConcurrentExecution below its minimum value of [{}].",
                    store::MIN_UNRESERVED_CONCURRENCY
                )));
            }
        }
    }
    let config = ProvisionedConfig {
        qualifier,
        requested,
        last_modified: clock::lambda_timestamp(),
    };
    store::put_provisioned(&mut *tx, &subject.account, &subject.name, &config).await?;
    tx.commit().await?;
    service.fleet.provisioned.changed();
    Ok((
        StatusCode::ACCEPTED,
        Json(ProvisionedStatus::new(&service, &subject, config, None)),
    ))
}

/// GET serves two operations: ListProvisionedConcurrencyConfigs (`?List=ALL`) and
/// GetProvisionedConcurrencyConfig (`?Qualifier=…`).
async fn get_provisioned(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<Response, ApiError> {
    if let Some(list) = &query.list {
        if list != "ALL" {
            return Err(ApiError::invalid_parameter(format!(
                "1 validation error detected: Value '{list}' at 'list' failed to satisfy \
                 constraint: Member must satisfy enum value set: [ALL]"
            )));
        }
        let subject = Subject::unqualified(&function, &principal, &service)?;
        return Ok(list_provisioned(&service, &subject, &query)
            .await?
            .into_response());
    }
    let (subject, qualifier) = provisioned_subject(&function, query, &principal, &service)?;
    let mut conn = service.registry.pool().acquire().await?;
    existing_target(&mut conn, &subject, &qualifier).await?;
    let config = store::provisioned(&mut *conn, &subject.account, &subject.name, &qualifier)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "ProvisionedConcurrencyConfigNotFoundException",
                "No Provisioned Concurrency Config found for this function",
            )
        })?;
    Ok(Json(ProvisionedStatus::new(&service, &subject, config, None)).into_response())
}

/// Like Lambda's, deleting a configuration that does not exist succeeds; the function and
/// the version or alias must exist. Removing concurrency breaks no rule, so no lock.
async fn delete_provisioned(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<StatusCode, ApiError> {
    let (subject, qualifier) = provisioned_subject(&function, query, &principal, &service)?;
    let mut conn = service.registry.pool().acquire().await?;
    existing_target(&mut conn, &subject, &qualifier).await?;
    store::delete_provisioned(&mut *conn, &subject.account, &subject.name, &qualifier).await?;
    service.fleet.provisioned.changed();
    Ok(StatusCode::NO_CONTENT)
}

async fn list_provisioned(
    service: &Service,
    subject: &Subject,
    query: &FunctionsQuery,
) -> Result<Json<ListProvisionedResponse>, ApiError> {
    let page = Page::parse(query.marker.as_deref(), query.max_items.as_deref(), |key| {
        target::check_qualifier(key).ok().map(|()| key.to_owned())
    })?;
    let mut conn = service.registry.pool().acquire().await?;
    subject.check_exists(&mut conn).await?;
    let found = store::list_provisioned(
        &mut *conn,
        &subject.account,
        &subject.name,
        page.after.as_deref().unwrap_or_default(),
        page.limit(),
    )
    .await?;
    let (found, next_marker) = page.split(found, |config| config.qualifier.clone());
    let configs = found
        .into_iter()
        .map(|config| {
            let arn = subject.qualified_arn(&config.qualifier);
            ProvisionedStatus::new(service, subject, config, Some(arn))
        })
        .collect();
    Ok(Json(ListProvisionedResponse {
        provisioned_concurrency_configs: configs,
        next_marker,
    }))
}

/// UpdateAlias's side of the provisioning rules: an alias with provisioned concurrency
/// may only move to published versions that are not provisioned themselves.
pub(crate) async fn check_alias_retarget(
    conn: &mut AnyConnection,
    subject: &Subject,
    alias: &Alias,
) -> Result<(), ApiError> {
    let configs =
        store::list_provisioned(&mut *conn, &subject.account, &subject.name, "", i64::MAX).await?;
    if configs.iter().any(|c| c.qualifier == alias.name) {
        check_alias_overlap(&alias.routing, &configs)?;
    }
    Ok(())
}

/// The concurrency the account can set aside for functions.
fn reservable() -> i64 {
    store::ACCOUNT_CONCURRENCY_LIMIT - store::MIN_UNRESERVED_CONCURRENCY
}

/// The function and the qualifier of a provisioned concurrency request: from `Qualifier`
/// in the query string or the qualified `FunctionName` (they must agree when both are
/// given).
fn provisioned_subject(
    function: &str,
    query: FunctionsQuery,
    principal: &Principal,
    service: &Service,
) -> Result<(Subject, String), ApiError> {
    let mut subject = Subject::parse(function, query.qualifier, principal, service)?;
    // The subject itself stays unqualified: its errors speak of the function.
    let qualifier = required(subject.qualifier.take(), "qualifier")?;
    Ok((subject, qualifier))
}

/// Sum of the function's provisioned concurrency.
async fn provisioned_total(conn: &mut AnyConnection, subject: &Subject) -> Result<i64, ApiError> {
    let configs =
        store::list_provisioned(&mut *conn, &subject.account, &subject.name, "", i64::MAX).await?;
    Ok(configs.iter().map(|c| c.requested).sum())
}

/// The version or alias of an existing function a configuration is for, which must exist:
/// `Some(alias)` for an alias, `None` for a published version.
async fn target(
    conn: &mut AnyConnection,
    subject: &Subject,
    qualifier: &str,
) -> Result<Option<Alias>, ApiError> {
    if is_number(qualifier) {
        subject.check_version(conn, qualifier).await?;
        return Ok(None);
    }
    subject.alias(conn, qualifier).await.map(Some)
}

/// Like [`target`] for reading or removing a configuration, where `$LATEST` can have none.
async fn existing_target(
    conn: &mut AnyConnection,
    subject: &Subject,
    qualifier: &str,
) -> Result<(), ApiError> {
    if qualifier == LATEST {
        return Err(ApiError::invalid_parameter(
            "The function resource provided must be an alias or a published version.",
        ));
    }
    subject.check_exists(conn).await?;
    target(conn, subject, qualifier).await.map(drop)
}

/// An alias may be provisioned only when it routes to published versions that have no
/// configuration of their own (each environment counts once).
fn check_alias_overlap(routing: &Routing, configs: &[ProvisionedConfig]) -> Result<(), ApiError> {
    if routing.primary == LATEST {
        return Err(ApiError::invalid_parameter(UNPUBLISHED));
    }
    if versions(routing).any(|v| configs.iter().any(|c| c.qualifier == v)) {
        return Err(ApiError::conflict(ALIAS_ON_PROVISIONED_VERSION));
    }
    Ok(())
}

/// A version may be provisioned only when no provisioned alias routes to it.
async fn check_version_overlap(
    conn: &mut AnyConnection,
    subject: &Subject,
    version: &str,
    configs: &[ProvisionedConfig],
) -> Result<(), ApiError> {
    for config in configs.iter().filter(|c| !is_number(&c.qualifier)) {
        let Some(alias) = alias_store::get(
            &mut *conn,
            &subject.account,
            &subject.name,
            &config.qualifier,
        )
        .await?
        else {
            continue;
        };
        if versions(&alias.routing).any(|v| v == version) {
            return Err(ApiError::conflict(
                "Version is pointed by a Provisioned Concurrency alias",
            ));
        }
    }
    Ok(())
}

/// Every version a routing sends invocations to.
fn versions(routing: &Routing) -> impl Iterator<Item = &str> {
    std::iter::once(routing.primary.as_str())
        .chain(routing.additional.as_ref().map(|(v, _)| v.as_str()))
}
