//! Lambda's alias operations: CreateAlias, GetAlias, UpdateAlias, DeleteAlias and
//! ListAliases, with weighted routing to one additional version. Also the request
//! plumbing the concurrency operations share: the function a request names, JSON bodies,
//! query strings and list paging.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sqlx::AnyConnection;

use crate::api::concurrency;
use crate::api::error::ApiError;
use crate::api::target::{self, LATEST};
use crate::registry::aliases::{self, Alias, Routing};
use crate::registry::concurrency as store;
use crate::service::{Principal, Service};

/// Longest alias description.
const MAX_DESCRIPTION: usize = 256;

/// Longest alias name.
const MAX_ALIAS: usize = 128;

/// Longest version number in a request.
const MAX_VERSION: usize = 1024;

/// Most aliases in one ListAliases page (Lambda's `MaxItems` may ask for more; like
/// Lambda's list operations, a page stops at 50 and says where to go on).
const MAX_PAGE: i64 = 50;

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
#[derive(Debug, Default, Deserialize)]
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
    Path(function): Path<String>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    let request: AliasRequest = json_body(&body)?;
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
    subject.check_versions(&mut tx, &alias.routing).await?;
    if aliases::get(&mut *tx, &subject.account, &subject.name, &alias.name)
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(format!(
            "Alias already exists: {}",
            subject.arn(Some(&alias.name))
        )));
    }
    aliases::insert(&mut *tx, &subject.account, &subject.name, &alias).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(configuration(&subject, alias))))
}

async fn read(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    Path((function, name)): Path<(String, String)>,
) -> Result<Json<AliasConfiguration>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    check_alias_name(&name)?;
    let mut conn = service.registry.pool().acquire().await?;
    let alias = subject.alias(&mut conn, &name).await?;
    Ok(Json(configuration(&subject, alias)))
}

async fn update(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    Path((function, name)): Path<(String, String)>,
    body: Bytes,
) -> Result<Json<AliasConfiguration>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    check_alias_name(&name)?;
    let request: AliasRequest = json_body(&body)?;
    if let Some(version) = &request.function_version {
        check_version(version)?;
    }
    if let Some(description) = &request.description {
        check_description(description)?;
    }

    let mut tx = service.registry.pool().begin().await?;
    store::lock_account(&mut tx, &subject.account).await?;
    let mut alias = subject.alias(&mut tx, &name).await?;
    if let Some(expected) = &request.revision_id {
        if *expected != alias.revision_id {
            return Err(ApiError::precondition_failed(
                "The Revision Id provided does not match the latest Revision Id. \
                 Call the GetFunction/GetAlias API to retrieve the latest Revision Id",
            ));
        }
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
    subject.check_versions(&mut tx, &alias.routing).await?;
    concurrency::check_alias_retarget(&mut tx, &subject, &alias).await?;
    aliases::update(&mut *tx, &subject.account, &subject.name, &alias).await?;
    tx.commit().await?;
    Ok(Json(configuration(&subject, alias)))
}

async fn remove(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    Path((function, name)): Path<(String, String)>,
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
    Path(function): Path<String>,
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<Json<ListAliasesResponse>, ApiError> {
    let subject = Subject::unqualified(&function, &principal, &service)?;
    let query = query_params(query)?;
    let version = query.get("FunctionVersion").map(String::as_str);
    if let Some(version) = version {
        check_version(version)?;
    }
    let page = Page::from_query(&query, MAX_PAGE, check_alias_name)?;

    let mut conn = service.registry.pool().acquire().await?;
    subject.check_exists(&mut conn).await?;
    let found = aliases::list(
        &mut *conn,
        &subject.account,
        &subject.name,
        version,
        &page.after,
        page.size + 1,
    )
    .await?;
    let (found, next_marker) = page.split(found, |alias| &alias.name);
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
        alias_arn: subject.arn(Some(&alias.name)),
        name: alias.name,
        function_version: alias.routing.primary,
        description: alias.description,
        routing_config: (!weights.is_empty()).then_some(RoutingConfig {
            additional_version_weights: weights,
        }),
        revision_id: alias.revision_id,
    }
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
        && !is_version_number(name);
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
    if version == LATEST || (version.len() <= MAX_VERSION && is_version_number(version)) {
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
    if version.is_empty() || version.len() > MAX_VERSION || !is_version_number(version) {
        return Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{{{version}={weight}}}' at \
             'routingConfig.additionalVersionWeights' failed to satisfy constraint: Map \
             keys must satisfy constraint: [Member must satisfy regular expression pattern: \
             [0-9]+]"
        )));
    }
    Ok(Some((version.clone(), weight)))
}

fn is_version_number(value: &str) -> bool {
    !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit())
}

/// The function a request acts on: a name in the caller's account, plus what ARNs and
/// error messages about it need.
pub(crate) struct Subject {
    pub account: String,
    pub region: String,
    pub name: String,
}

impl Subject {
    /// Parses a `FunctionName` path parameter, returning also the qualifier it carries.
    pub fn parse(
        value: &str,
        principal: &Principal,
        service: &Service,
    ) -> Result<(Subject, Option<String>), ApiError> {
        let region = &service.settings.region;
        let parsed = target::parse(value, principal, region)?;
        let subject = Subject {
            account: principal.account_id.clone(),
            region: region.clone(),
            name: parsed.name,
        };
        Ok((subject, parsed.qualifier))
    }

    /// Parses a `FunctionName` for an operation on the whole function, where a version or
    /// alias in the name would be ignored silently otherwise.
    pub fn unqualified(
        value: &str,
        principal: &Principal,
        service: &Service,
    ) -> Result<Subject, ApiError> {
        match Subject::parse(value, principal, service)? {
            (subject, None) => Ok(subject),
            (_, Some(_)) => Err(ApiError::invalid_parameter(format!(
                "This operation does not accept a qualified function name or ARN: {value}"
            ))),
        }
    }

    /// The function's ARN, or its version's or alias's.
    pub fn arn(&self, qualifier: Option<&str>) -> String {
        target::function_arn(&self.region, &self.account, &self.name, qualifier)
    }

    /// 404 for the function, or for one of its versions.
    pub fn not_found(&self, qualifier: Option<&str>) -> ApiError {
        ApiError::not_found(format!("Function not found: {}", self.arn(qualifier)))
    }

    /// 404 for one of its aliases.
    pub fn alias_not_found(&self, name: &str) -> ApiError {
        ApiError::not_found(format!("Cannot find alias arn: {}", self.arn(Some(name))))
    }

    /// Fails with 404 unless the function exists.
    pub async fn check_exists(&self, conn: &mut AnyConnection) -> Result<(), ApiError> {
        if aliases::function_exists(conn, &self.account, &self.name).await? {
            Ok(())
        } else {
            Err(self.not_found(None))
        }
    }

    /// The alias, or 404 for it or for the function.
    async fn alias(&self, conn: &mut AnyConnection, name: &str) -> Result<Alias, ApiError> {
        self.check_exists(conn).await?;
        aliases::get(conn, &self.account, &self.name, name)
            .await?
            .ok_or_else(|| self.alias_not_found(name))
    }

    /// Fails with 404 unless every version `routing` names exists.
    async fn check_versions(
        &self,
        conn: &mut AnyConnection,
        routing: &Routing,
    ) -> Result<(), ApiError> {
        let additional = routing.additional.as_ref().map(|(version, _)| version);
        for version in std::iter::once(&routing.primary).chain(additional) {
            if !aliases::version_exists(&mut *conn, &self.account, &self.name, version).await? {
                return Err(self.not_found(Some(version)));
            }
        }
        Ok(())
    }
}

/// A request's JSON body; an empty body is an empty object.
pub(crate) fn json_body<T: DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.is_empty() {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|e| {
        ApiError::invalid_request(format!("Could not parse request body into json: {e}"))
    })
}

/// A required body member, or Lambda's "must not be null" error naming it.
pub(crate) fn required<T>(value: Option<T>, member: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError::invalid_parameter(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy \
             constraint: Member must not be null"
        ))
    })
}

/// A query string's parameters, or an error in Lambda's shape.
pub(crate) fn query_params(
    query: Result<Query<BTreeMap<String, String>>, QueryRejection>,
) -> Result<BTreeMap<String, String>, ApiError> {
    query
        .map(|Query(params)| params)
        .map_err(|e| ApiError::invalid_parameter(format!("Invalid query string: {e}")))
}

/// Where a list page starts and how long it is. The `Marker` is opaque to clients: the
/// base64url of the last key of the previous page, so a page picks up after that key even
/// when items were added or removed in between.
pub(crate) struct Page {
    /// The key after which the page starts (`""`: from the start).
    pub after: String,
    pub size: i64,
}

impl Page {
    /// Reads `Marker` and `MaxItems` (1 to `max` per page; larger requests are cut to
    /// `max`). `check_key` validates the key inside a marker.
    pub fn from_query(
        query: &BTreeMap<String, String>,
        max: i64,
        check_key: fn(&str) -> Result<(), ApiError>,
    ) -> Result<Page, ApiError> {
        let size = match query.get("MaxItems") {
            None => max,
            Some(text) => match text.parse::<i64>() {
                Ok(n) if n >= 1 => n.min(max),
                _ => {
                    return Err(ApiError::invalid_parameter(format!(
                        "1 validation error detected: Value '{text}' at 'maxItems' failed to \
                         satisfy constraint: Member must have value greater than or equal to 1"
                    )))
                }
            },
        };
        let after = match query.get("Marker") {
            None => String::new(),
            Some(marker) => {
                let invalid = || ApiError::invalid_parameter(format!("Invalid marker: {marker}"));
                let key = URL_SAFE_NO_PAD
                    .decode(marker)
                    .ok()
                    .and_then(|bytes| String::from_utf8(bytes).ok())
                    .ok_or_else(invalid)?;
                check_key(&key).map_err(|_| invalid())?;
                key
            }
        };
        Ok(Page { after, size })
    }

    /// Cuts `found` (fetched with a limit of `size + 1`) to the page, with the marker of
    /// the next page when there is one.
    pub fn split<T>(&self, mut found: Vec<T>, key: fn(&T) -> &String) -> (Vec<T>, Option<String>) {
        let size = usize::try_from(self.size).unwrap_or(usize::MAX);
        if found.len() <= size {
            return (found, None);
        }
        found.truncate(size);
        let marker = found.last().map(|last| URL_SAFE_NO_PAD.encode(key(last)));
        (found, marker)
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
