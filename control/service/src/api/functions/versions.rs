//! PublishVersion and DeleteFunction (of a whole function or of one published version).

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::{code, settings};
use crate::api::error::ApiError;
use crate::api::request::{FunctionName, JsonBody, Params};
use crate::api::shapes::{FunctionConfiguration, FunctionsQuery, PublishVersionRequest};
use crate::api::subject::Subject;
use crate::api::target::LATEST;
use crate::service::{Principal, Service};
use ember_store::functions as store;

/// `POST /2015-03-31/functions/{function}/versions`: freezes `$LATEST` as the next
/// version, or returns the newest version if nothing changed since it.
pub async fn publish(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    JsonBody(request): JsonBody<PublishVersionRequest>,
) -> Result<(StatusCode, Json<FunctionConfiguration>), ApiError> {
    let subject = Subject::parse(&function, None, &principal, &service)?.only_latest()?;
    let description = request.description.map(settings::description).transpose()?;
    let version = store::publish(
        &service.registry,
        &subject.account,
        &subject.name,
        request.code_sha256.as_deref(),
        description.as_deref(),
        request.revision_id.as_deref(),
    )
    .await
    .map_err(|e| subject.refused(e))?;
    let qualifier = version.version.clone();
    Ok((
        StatusCode::CREATED,
        Json(FunctionConfiguration::of(
            version,
            &subject.region,
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
    let subject = Subject::parse(&function, query.qualifier, &principal, &service)?;
    let registry = &service.registry;
    let deleted = match subject.qualifier.as_deref() {
        None => store::delete_function(registry, &subject.account, &subject.name).await,
        Some(LATEST) => {
            return Err(ApiError::invalid_parameter(
                "$LATEST version cannot be deleted without deleting the function.",
            ))
        }
        Some(version) if store::is_number(version) => {
            store::delete_version(registry, &subject.account, &subject.name, version).await
        }
        Some(alias) => {
            return Err(ApiError::invalid_parameter(format!(
                "The Qualifier of DeleteFunction must be a version number; to delete alias \
                 {alias:?}, use DeleteAlias."
            )))
        }
    };
    let freed = deleted.map_err(|e| subject.refused(e))?;
    code::discard(&service, &subject.account, freed).await;
    Ok(StatusCode::NO_CONTENT)
}
