//! Lambda's alias operations: CreateAlias, GetAlias, UpdateAlias, DeleteAlias and
//! ListAliases, with weighted routing to one additional version.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::{Deserialize, Serialize};

use crate::api::concurrency;
use crate::api::error::ApiError;
use crate::api::paging::Page;
use crate::api::request::{required, FunctionName, JsonBody, Params, PathParams};
use crate::api::shapes::FunctionsQuery;
use crate::api::subject::{revision_mismatch, Subject};
use crate::api::target::LATEST;
use crate::service::{Principal, Service};
use ember_store::aliases::{self, Alias, AliasChange, NewAlias, RoutingError, MAX_VERSION};
use ember_store::functions::is_number;

/// Longest alias description.
const MAX_DESCRIPTION: usize = 256;

/// Longest alias name.
const MAX_ALIAS: usize = 128;

/// The alias routes.
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route(
            "/2015-03-31/functions/{function}/aliases",
            post(create).get(list),
        )
        .route(
            "/2015-03-31/functions/{function}/aliases/{name}",
            get(read).put(update).delete(remove),
        )
}

/// The body of CreateAlias and UpdateAlias (each ignores what it does not take).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct AliasRequest {
    name: Option<String>,
    function_version: Option<String>,
    description: Option<String>,
    routing_config: Option<RoutingConfig>,
    revision_id: Option<String>,
}

/// Lambda's `AliasRoutingConfiguration`.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoutingConfig {
    #[serde(default)]
    additional_version_weights: BTreeMap<String, f64>,
}

/// Lambda's `AliasConfiguration`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AliasConfiguration {
    alias_arn: String,
    name: String,
    function_version: String,
    description: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_config: Option<RoutingConfig>,
    revision_id: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ListAliasesResponse {
    aliases: Vec<AliasConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    next_marker: Option<String>,
}

async fn create(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    JsonBody(request): JsonBody<AliasRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    let name = required(request.name, "name")?;
    check_alias_name(&name)?;
    let function_version = required(request.function_version, "functionVersion")?;
    check_version(&function_version)?;
    let description = request.description.unwrap_or_default();
    check_description(&description)?;
    let new = NewAlias {
        name,
        function_version,
        description,
        weights: request
            .routing_config
            .map(|r| r.additional_version_weights)
            .unwrap_or_default(),
    };
    let alias = aliases::create(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        new,
    )
    .await
    .map_err(|e| refused(&subject, e))?;
    Ok((StatusCode::CREATED, Json(configuration(&subject, alias))))
}

async fn read(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    PathParams((function, name)): PathParams<(String, String)>,
) -> Result<Json<AliasConfiguration>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    check_alias_name(&name)?;
    let alias = aliases::get(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        &name,
    )
    .await
    .map_err(|e| refused(&subject, e))?;
    Ok(Json(configuration(&subject, alias)))
}

async fn update(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    PathParams((function, name)): PathParams<(String, String)>,
    JsonBody(request): JsonBody<AliasRequest>,
) -> Result<Json<AliasConfiguration>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    check_alias_name(&name)?;
    if let Some(version) = &request.function_version {
        check_version(version)?;
    }
    if let Some(description) = &request.description {
        check_description(description)?;
    }
    let change = AliasChange {
        function_version: request.function_version,
        description: request.description,
        weights: request.routing_config.map(|r| r.additional_version_weights),
        revision_id: request.revision_id,
    };
    let alias = aliases::update(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        &name,
        change,
    )
    .await
    .map_err(|e| refused(&subject, e))?;
    Ok(Json(configuration(&subject, alias)))
}

async fn remove(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    PathParams((function, name)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    check_alias_name(&name)?;
    aliases::delete(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        &name,
    )
    .await
    .map_err(|e| refused(&subject, e))?;
    Ok(StatusCode::NO_CONTENT)
}

async fn list(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<Json<ListAliasesResponse>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    let version = query.function_version.as_deref();
    if let Some(version) = version {
        check_version(version)?;
    }
    let page = Page::parse(query.marker.as_deref(), query.max_items.as_deref(), |key| {
        check_alias_name(key).ok().map(|()| key.to_owned())
    })?;
    let found = aliases::list(
        service.registry.pool(),
        &subject.account,
        &subject.name,
        version,
        page.after.as_deref().unwrap_or_default(),
        page.limit(),
    )
    .await
    .map_err(|e| refused(&subject, e))?;
    let (found, next_marker) = page.split(found, |alias| alias.name.clone());
    let aliases = found
        .into_iter()
        .map(|alias| configuration(&subject, alias))
        .collect();
    Ok(Json(ListAliasesResponse {
        aliases,
        next_marker,
    }))
}

fn configuration(subject: &Subject, alias: Alias) -> AliasConfiguration {
    let weights = aliases::weights(&alias.routing);
    AliasConfiguration {
        alias_arn: subject.qualified_arn(&alias.name),
        name: alias.name,
        function_version: alias.routing.primary,
        description: alias.description,
        routing_config: (!weights.is_empty()).then_some(RoutingConfig {
            additional_version_weights: weights,
        }),
        revision_id: alias.revision_id,
    }
}

/// The store's refusal as Lambda words it.
fn refused(subject: &Subject, error: aliases::Error) -> ApiError {
    match error {
        aliases::Error::FunctionNotFound => subject.not_found(),
        aliases::Error::VersionNotFound(version) => subject.version_not_found(&version),
        aliases::Error::AliasNotFound(alias) => subject.alias_not_found(&alias),
        aliases::Error::AliasExists(alias) => ApiError::conflict(format!(
            "Alias already exists: {}",
            subject.qualified_arn(&alias)
        )),
        aliases::Error::RevisionMismatch => revision_mismatch(),
        aliases::Error::Routing(e) => routing_refused(e),
        aliases::Error::Provisioned(e) => concurrency::provisioned_routing_refused(e),
        aliases::Error::Sql(e) => e.into(),
    }
}

/// Lambda's words for the routing rules.
fn routing_refused(error: RoutingError) -> ApiError {
    match error {
        RoutingError::TooManyVersions => ApiError::invalid_parameter(
            "Number of items in AdditionalVersionWeights cannot be greater than 1",
        ),
        RoutingError::WeightOutOfRange { version, weight } => ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{{{version}={weight}}}' at \
                 'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map \
                 value must satisfy constraint: [Member must have value less than 1.0, Member \
                 must have value greater than or equal to 0.0]"
        )),
        RoutingError::AdditionalIsPrimary(primary) => ApiError::invalid_parameter(format!(
            "Invalid function version {primary}. Function version {primary} is already \
             included in routing configuration."
        )),
        RoutingError::FromLatest => ApiError::invalid_parameter(
            "$LATEST is not supported for an alias pointing to more than 1 version",
        ),
        RoutingError::NotAVersion { version, weight } => ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{{{version}={weight}}}' at \
             'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map \
             keys must satisfy constraint: [Member must satisfy regular expression pattern: \
             [0-9]+]"
        )),
    }
}

/// Lambda's alias name rule: 1 to 128 of `[a-zA-Z0-9-_]`, not all digits (those are
/// versions).
fn check_alias_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=MAX_ALIAS).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        && !is_number(name);
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{name}' at 'name' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: \
             (?!^[0-9]+$)([a-zA-Z0-9-_]+)"
        )))
    }
}

/// A version an alias may point at: `$LATEST` or a number.
fn check_version(version: &str) -> Result<(), ApiError> {
    if version == LATEST || (version.len() <= MAX_VERSION && is_number(version)) {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{version}' at 'functionVersion' failed to \
             satisfy constraint: Member must satisfy regular expression pattern: \
             (\\$LATEST|[0-9]+)"
        )))
    }
}

fn check_description(description: &str) -> Result<(), ApiError> {
    if description.chars().count() <= MAX_DESCRIPTION {
        Ok(())
    } else {
        Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value at 'description' failed to satisfy \
             constraint: Member must have length less than or equal to {MAX_DESCRIPTION}"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_names_follow_lambda() {
        for good in ["live", "v1", "a-b_c", "1a", &"x".repeat(128)] {
            assert!(check_alias_name(good).is_ok(), "{good}");
        }
        for bad in ["", "12", "$LATEST", "a:b", "a b", &"x".repeat(129)] {
            assert!(check_alias_name(bad).is_err(), "{bad}");
        }
    }
}
