//! PublishVersion and DeleteFunction (of a whole function or of one published version).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::body::{FunctionName, JsonBody, Params};
use super::{code, settings, Named};
use crate::api::error::ApiError;
use crate::api::shapes::{FunctionConfiguration, FunctionsQuery, PublishVersionRequest};
use crate::api::target::LATEST;
use crate::registry::functions as store;
use crate::service::{Principal, Service};

/// `POST /2015-03-31/functions/{function}/versions`: freezes `$LATEST` as the next
/// version, or returns the newest version if nothing changed since it.
pub async fn publish(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    JsonBody(request): JsonBody<PublishVersionRequest>,
) -> Result<(StatusCode, Json<FunctionConfiguration>), ApiError> {
    let named = Named::parse(&function, None, &principal, &service)?.only_latest()?;
    let description = request.description.map(settings::description).transpose()?;
    let version = store::publish(
        &service.registry,
        &named.account,
        &named.name,
        request.code_sha256.as_deref(),
        description.as_deref(),
        request.revision_id.as_deref(),
    )
    .await
    .map_err(|e| named.refused(e))?;
    let qualifier = version.version.clone();
    Ok((
        StatusCode::CREATED,
        Json(FunctionConfiguration::of(
            version,
            &named.region,
            Some(&qualifier),
        )),
    ))
}

/// `DELETE /2015-03-31/functions/{function}[?Qualifier=N]`: the whole function (its
/// versions, aliases and concurrency settings with it), or published version N; then the
/// code no version uses any more.
pub async fn delete(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<StatusCode, ApiError> {
    let named = Named::parse(&function, query.qualifier, &principal, &service)?;
    let registry = &service.registry;
    let deleted = match named.qualifier.as_deref() {
        None => store::delete_function(registry, &named.account, &named.name).await,
        Some(LATEST) => {
            return Err(ApiError::invalid_parameter(
                "$LATEST version cannot be deleted without deleting the function.",
            ))
        }
        Some(version) if store::is_number(version) => {
            store::delete_version(registry, &named.account, &named.name, version).await
        }
        Some(alias) => {
            return Err(ApiError::invalid_parameter(format!(
                "The Qualifier of DeleteFunction must be a version number; to delete alias \
                 {alias:?}, use DeleteAlias."
            )))
        }
    };
    let freed = deleted.map_err(|e| named.refused(e))?;
    code::discard(&service, &named.account, freed).await;
    Ok(StatusCode::NO_CONTENT)
}
