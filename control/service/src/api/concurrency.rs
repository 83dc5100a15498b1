//! Lambda's concurrency operations. Reserved concurrency (Put/Get/DeleteFunctionConcurrency)
//! caps a function and sets that much aside from the account's pool; provisioned
//! concurrency (Put/Get/Delete/ListProvisionedConcurrencyConfig(s)) keeps initialized
//! environments ready for a published version or an alias.
//!
//! The rules that span rows (the account keeps [`store::MIN_UNRESERVED_CONCURRENCY`] of
//! [`store::ACCOUNT_CONCURRENCY_LIMIT`] unreserved, a function's provisioned total fits in
//! its reservation, no version is provisioned both directly and through an alias) are the
//! store's: each write is one call to [`ember_store::concurrency`], which checks them
//! under the account's lock, and its refusal is worded here as Lambda words it.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, put};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::api::paging::Page;
use crate::api::request::{required, FunctionName, JsonBody, Params};
use crate::api::shapes::FunctionsQuery;
use crate::api::subject::Subject;
use crate::api::target::{self, LATEST};
use crate::fleet::provision::ConfigId;
use crate::service::{Principal, Service};
use ember_store::aliases::ProvisionedRoutingError;
use ember_store::concurrency::{self as store, ProvisionedConfig};

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
    store::put_reserved(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        reserved,
    )
    .await
    .map_err(|e| refused(&subject, e))?;
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
        .await
        .map_err(|e| refused(&subject, e))?;
    Ok(Json(Concurrency {
        reserved_concurrent_executions: reserved,
    }))
}

async fn delete_reserved(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
) -> Result<StatusCode, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    store::delete_reserved(service.registry.pool(), &subject.account, &subject.name)
        .await
        .map_err(|e| refused(&subject, e))?;
    Ok(StatusCode::NO_CONTENT)
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
    let config = store::put_provisioned(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        &qualifier,
        requested,
    )
    .await
    .map_err(|e| refused(&subject, e))?;
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
    check_configurable(&qualifier)?;
    let config = store::get_provisioned(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        &qualifier,
    )
    .await
    .map_err(|e| refused(&subject, e))?;
    Ok(Json(ProvisionedStatus::new(&service, &subject, config, None)).into_response())
}

/// Like Lambda's, deleting a configuration that does not exist succeeds; the function and
/// the version or alias must exist.
async fn delete_provisioned(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<StatusCode, ApiError> {
    let (subject, qualifier) = provisioned_subject(&function, query, &principal, &service)?;
    check_configurable(&qualifier)?;
    store::delete_provisioned(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        &qualifier,
    )
    .await
    .map_err(|e| refused(&subject, e))?;
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
    let found = store::list_provisioned(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        page.after.as_deref().unwrap_or_default(),
        page.limit(),
    )
    .await
    .map_err(|e| refused(subject, e))?;
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

/// The store's refusal as Lambda words it.
fn refused(subject: &Subject, error: store::Error) -> ApiError {
    match error {
        store::Error::FunctionNotFound => subject.not_found(),
        store::Error::VersionNotFound(version) => subject.version_not_found(&version),
        store::Error::AliasNotFound(alias) => subject.alias_not_found(&alias),
        store::Error::ConfigNotFound => ApiError::new(
            StatusCode::NOT_FOUND,
            "ProvisionedConcurrencyConfigNotFoundException",
            "No Provisioned Concurrency Config found for this function",
        ),
        store::Error::ReservationBelowProvisioned { provisioned } => {
            ApiError::invalid_parameter(format!(
                "Specified ReservedConcurrentExecutions for function is less than the \
                 function's total provisioned concurrency [{provisioned}]."
            ))
        }
        store::Error::ReservationOverAccount => ApiError::invalid_parameter(format!(
            "Specified ReservedConcurrentExecutions for function decreases account's \
             UnreservedConcurrentExecution below its minimum value of [{}].",
            store::MIN_UNRESERVED_CONCURRENCY
        )),
        store::Error::ProvisionedOverReservation => ApiError::invalid_parameter(
            "Requested Provisioned Concurrency should not be greater than the \
             reservedConcurrentExecution for function",
        ),
        store::Error::ProvisionedOverAccount => ApiError::invalid_parameter(format!(
            "Specified ConcurrentExecutions for function decreases account's \
             UnreservedConcurrentExecution below its minimum value of [{}].",
            store::MIN_UNRESERVED_CONCURRENCY
        )),
        store::Error::VersionInProvisionedAlias => {
            ApiError::conflict("Version is pointed by a Provisioned Concurrency alias")
        }
        store::Error::Routing(e) => provisioned_routing_refused(e),
        store::Error::Sql(e) => e.into(),
    }
}

/// Lambda's words for a routing that cannot take provisioned concurrency (also
/// UpdateAlias's, moving an alias that has some).
pub(crate) fn provisioned_routing_refused(error: ProvisionedRoutingError) -> ApiError {
    match error {
        ProvisionedRoutingError::Unpublished => ApiError::invalid_parameter(UNPUBLISHED),
        ProvisionedRoutingError::VersionProvisioned => {
            ApiError::conflict(ALIAS_ON_PROVISIONED_VERSION)
        }
    }
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

/// Reading or removing a configuration names an alias or a published version:
/// `$LATEST` never has one.
fn check_configurable(qualifier: &str) -> Result<(), ApiError> {
    if qualifier == LATEST {
        return Err(ApiError::invalid_parameter(
            "The function resource provided must be an alias or a published version.",
        ));
    }
    Ok(())
}
