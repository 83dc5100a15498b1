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
use sqlx::AnyConnection;

use crate::api::concurrency;
use crate::api::error::ApiError;
use crate::api::paging::Page;
use crate::api::request::{required, FunctionName, JsonBody, Params, PathParams};
use crate::api::shapes::FunctionsQuery;
use crate::api::subject::{revision_mismatch, Subject};
use crate::api::target::LATEST;
use crate::service::{Principal, Service};
use ember_store::aliases::{self, Alias, Routing};
use ember_store::concurrency as store;
use ember_store::functions::is_number;

/// Longest alias description.
const MAX_DESCRIPTION: usize = 256;

/// Longest alias name.
const MAX_ALIAS: usize = 128;

/// Longest version number in a request.
const MAX_VERSION: usize = 1024;

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
    let primary = required(request.function_version, "functionVersion")?;
    check_version(&primary)?;
    let description = request.description.unwrap_or_default();
    check_description(&description)?;
    let weights = request
        .routing_config
        .map(|r| r.additional_version_weights)
        .unwrap_or_default();
    let additional = check_routing(&primary, &weights)?;
    let alias = Alias {
        name,
        routing: Routing {
            primary,
            additional,
        },
        description,
        revision_id: new_revision(),
    };

    let mut tx = service.registry.pool().begin().await?;
    store::lock_account(&mut tx, &subject.account).await?;
    subject.check_exists(&mut tx).await?;
    check_versions(&mut tx, &subject, &alias.routing).await?;
    if aliases::get(&mut *tx, &subject.account, &subject.name, &alias.name)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "Alias already exists: {}",
            subject.qualified_arn(&alias.name)
        )));
    }
    aliases::insert(&mut *tx, &subject.account, &subject.name, &alias).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(configuration(&subject, alias))))
}

async fn read(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    PathParams((function, name)): PathParams<(String, String)>,
) -> Result<Json<AliasConfiguration>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    check_alias_name(&name)?;
    let mut conn = service.registry.pool().acquire().await?;
    subject.check_exists(&mut conn).await?;
    let alias = subject.alias(&mut conn, &name).await?;
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

    let mut tx = service.registry.pool().begin().await?;
    store::lock_account(&mut tx, &subject.account).await?;
    subject.check_exists(&mut tx).await?;
    let mut alias = subject.alias(&mut tx, &name).await?;
    if request
        .revision_id
        .is_some_and(|expected| expected != alias.revision_id)
    {
        return Err(revision_mismatch());
    }
    // The result must satisfy the same rules as a new alias, whichever parts changed.
    let primary = request
        .function_version
        .unwrap_or_else(|| alias.routing.primary.clone());
    let weights = match request.routing_config {
        Some(config) => config.additional_version_weights,
        None => aliases::weights(&alias.routing),
    };
    alias.routing = Routing {
        additional: check_routing(&primary, &weights)?,
        primary,
    };
    if let Some(description) = request.description {
        alias.description = description;
    }
    alias.revision_id = new_revision();
    check_versions(&mut tx, &subject, &alias.routing).await?;
    concurrency::check_alias_retarget(&mut tx, &subject, &alias).await?;
    aliases::update(&mut *tx, &subject.account, &subject.name, &alias).await?;
    tx.commit().await?;
    Ok(Json(configuration(&subject, alias)))
}

async fn remove(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    PathParams((function, name)): PathParams<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    check_alias_name(&name)?;
    let mut tx = service.registry.pool().begin().await?;
    store::lock_account(&mut tx, &subject.account).await?;
    subject.check_exists(&mut tx).await?;
    if !aliases::delete(&mut *tx, &subject.account, &subject.name, &name).await? {
        return Err(subject.alias_not_found(&name));
    }
    // An alias's provisioned concurrency goes with it, as in Lambda.
    store::delete_provisioned(&mut *tx, &subject.account, &subject.name, &name).await?;
    tx.commit().await?;
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

    let mut conn = service.registry.pool().acquire().await?;
    subject.check_exists(&mut conn).await?;
    let found = aliases::list(
        &mut *conn,
        &subject.account,
        &subject.name,
        version,
        page.after.as_deref().unwrap_or_default(),
        page.limit(),
    )
    .await?;
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

/// Fails with 404 unless every version `routing` names exists.
async fn check_versions(
    conn: &mut AnyConnection,
    subject: &Subject,
    routing: &Routing,
) -> Result<(), ApiError> {
    let additional = routing.additional.as_ref().map(|(version, _)| version);
    for version in std::iter::once(&routing.primary).chain(additional) {
        subject.check_version(conn, version).await?;
    }
    Ok(())
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
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

/// Lambda's routing rules, on the request alone: at most one additional version, a
/// published one other than the primary, with a weight from 0.0 up to (not including)
/// 1.0; and no routing from `$LATEST`.
fn check_routing(
    primary: &str,
    weights: &BTreeMap<String, f64>,
) -> Result<Option<(String, f64)>, ApiError> {
    if weights.len() > 1 {
        return Err(ApiError::invalid_parameter(
            "Number of items in AdditionalVersionWeights cannot be greater than 1",
        ));
    }
    let Some((version, &weight)) = weights.iter().next() else {
        return Ok(None);
    };
    // A weight of 1.0 would leave the primary version nothing; Lambda refuses it too.
    if !(0.0..1.0).contains(&weight) {
        return Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{{{version}={weight}}}' at \
             'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map \
             value must satisfy constraint: [Member must have value less than 1.0, Member \
             must have value greater than or equal to 0.0]"
        )));
    }
    if version == primary {
        return Err(ApiError::invalid_parameter(format!(
            "Invalid function version {primary}. Function version {primary} is already \
             included in routing configuration."
        )));
    }
    if primary == LATEST {
        return Err(ApiError::invalid_parameter(
            "$LATEST is not supported for an alias pointing to more than 1 version",
        ));
    }
    if version.is_empty() || version.len() > MAX_VERSION || !is_number(version) {
        return Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{{{version}={weight}}}' at \
             'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map \
             keys must satisfy constraint: [Member must satisfy regular expression pattern: \
             [0-9]+]"
        )));
    }
    Ok(Some((version.clone(), weight)))
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

    #[test]
    fn routing_rules() {
        let one = |v: &str, w: f64| BTreeMap::from([(v.to_owned(), w)]);
        assert_eq!(check_routing("1", &BTreeMap::new()).unwrap(), None);
        assert_eq!(
            check_routing("1", &one("2", 0.0)).unwrap(),
            Some(("2".into(), 0.0))
        );
        assert!(check_routing("1", &one("2", 0.999)).is_ok());
        for (primary, weights) in [
            ("1", one("2", 1.0)),
            ("1", one("2", -0.1)),
            ("1", one("1", 0.5)),
            (LATEST, one("2", 0.5)),
            ("1", one(LATEST, 0.5)),
            ("1", one("x", 0.5)),
            ("1", BTreeMap::from([("2".into(), 0.1), ("3".into(), 0.1)])),
        ] {
            assert!(
                check_routing(primary, &weights).is_err(),
                "{primary} {weights:?}"
            );
        }
    }
}
