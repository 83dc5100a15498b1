//! UpdateFunctionCode and UpdateFunctionConfiguration: the two ways `$LATEST` changes.
//! Both check a given `RevisionId` early (to fail before the upload's work) and again in
//! the registry's transaction (where it counts).

use std::sync::Arc;

use axum::extract::State;
use axum::{Extension, Json};

use super::{code, settings, written_qualifier};
use crate::api::error::ApiError;
use crate::api::request::{blocking, FunctionName, JsonBody};
use crate::api::shapes::{
    FunctionConfiguration, UpdateFunctionCodeRequest, UpdateFunctionConfigurationRequest,
};
use crate::api::subject::Subject;
use crate::service::{Principal, Service};
use ember_core::module;
use ember_store::functions::{self as store, CodeChange, ConfigChange, HandlerChange, Version};

/// `PUT /2015-03-31/functions/{function}/code`: new code for `$LATEST`, checked with its
/// current handler; `DryRun` checks without storing, `Publish` also publishes a version.
pub async fn code(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    JsonBody(request): JsonBody<UpdateFunctionCodeRequest>,
) -> Result<Json<FunctionConfiguration>, ApiError> {
    let subject = Subject::parse(&function, None, &principal, &service)?.only_latest()?;
    settings::architectures(request.architectures.as_deref())?;
    let elsewhere = request
        .s3_bucket
        .or(request.s3_key)
        .or(request.image_uri)
        .is_some();
    let zip = code::only_zip_file(request.zip_file, elsewhere)?;
    let latest = latest(&subject, &service, request.revision_id.as_deref()).await?;
    let handler = latest.config.handler.clone();
    let prepared = code::prepare(&service, zip, handler.clone()).await?;
    if request.dry_run {
        let mut would_be = latest;
        would_be.code.kind = prepared.kind;
        would_be.code.code_sha256 = prepared.code_sha256;
        would_be.code.code_size = i64::try_from(prepared.code_size).unwrap_or(i64::MAX);
        return Ok(Json(FunctionConfiguration::of(
            would_be,
            &subject.region,
            None,
        )));
    }
    let code = code::store(&service, &subject.account, prepared).await?;
    let written = store::update_code(
        &service.registry,
        &subject.account,
        &subject.name,
        CodeChange {
            code: &code,
            handler: &handler,
            revision_id: request.revision_id.as_deref(),
            publish: request.publish,
        },
        service.settings.code_storage_limit,
    )
    .await;
    match written {
        Ok(written) => {
            code::discard(&service, &subject.account, written.freed).await;
            let qualifier = written_qualifier(&written.version);
            Ok(Json(FunctionConfiguration::of(
                written.version,
                &subject.region,
                qualifier.as_deref(),
            )))
        }
        Err(e) => {
            code::abandon(&service, &subject.account, code.artifact_id).await;
            Err(subject.refused(e))
        }
    }
}

/// `PUT /2015-03-31/functions/{function}/configuration`: changes the settings given. A
/// new handler is checked against the stored module, so a reactor without that export is
/// refused here rather than at its first cold start.
pub async fn configuration(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    JsonBody(request): JsonBody<UpdateFunctionConfigurationRequest>,
) -> Result<Json<FunctionConfiguration>, ApiError> {
    let subject = Subject::parse(&function, None, &principal, &service)?.only_latest()?;
    let mut change = ConfigChange {
        description: request.description.map(settings::description).transpose()?,
        runtime: request
            .runtime
            .map(|r| settings::runtime(Some(r)))
            .transpose()?,
        handler: None,
        role: request.role.map(settings::role).transpose()?,
        memory_size: request.memory_size.map(settings::memory_size).transpose()?,
        timeout: request.timeout.map(settings::timeout).transpose()?,
        environment: request
            .environment
            .map(|e| settings::environment(Some(e)))
            .transpose()?,
    };
    let new_handler = request
        .handler
        .map(|h| settings::handler(Some(h)))
        .transpose()?;
    let latest = latest(&subject, &service, request.revision_id.as_deref()).await?;
    if let Some(handler) = new_handler.filter(|h| *h != latest.config.handler) {
        let artifact_id = latest.code.artifact_id;
        let bytes = code::load(&service, &subject.account, &artifact_id).await?;
        let checked = handler.clone();
        let kind = blocking(move || module::inspect(&bytes, &checked))
            .await?
            .map_err(|reason| {
                ApiError::invalid_parameter(format!(
                    "The function's code does not work with handler {handler:?}: {reason}"
                ))
            })?;
        change.handler = Some(HandlerChange {
            handler,
            artifact_id,
            kind,
        });
    }
    let version = store::update_config(
        &service.registry,
        &subject.account,
        &subject.name,
        &change,
        request.revision_id.as_deref(),
    )
    .await
    .map_err(|e| subject.refused(e))?;
    Ok(Json(FunctionConfiguration::of(
        version,
        &subject.region,
        None,
    )))
}

/// `$LATEST`, refused early if `revision_id` is given and stale.
async fn latest(
    subject: &Subject,
    service: &Service,
    revision_id: Option<&str>,
) -> Result<Version, ApiError> {
    let latest = subject.resolve(service).await?;
    if revision_id.is_some_and(|id| id != latest.revision_id) {
        return Err(subject.refused(store::Error::RevisionMismatch));
    }
    Ok(latest)
}
