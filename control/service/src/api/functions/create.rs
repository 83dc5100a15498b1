//! CreateFunction.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::{code, settings, written_qualifier};
use crate::api::error::ApiError;
use crate::api::request::{required, JsonBody};
use crate::api::shapes::{CreateFunctionRequest, FunctionConfiguration};
use crate::api::subject::Subject;
use crate::service::{Principal, Service};
use ember_store::functions::{self as store, Config};

/// `POST /2015-03-31/functions`: checks the settings, then the code, stores it, and
/// registers the function (and version 1 with `Publish`).
pub async fn create(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    JsonBody(request): JsonBody<CreateFunctionRequest>,
) -> Result<(StatusCode, Json<FunctionConfiguration>), ApiError> {
    let function = required(request.function_name, "functionName")?;
    let subject = Subject::parse(&function, None, &principal, &service)?;
    if subject.qualifier.is_some() {
        return Err(ApiError::invalid_parameter(
            "A function is created without a qualifier: give its name or unqualified ARN",
        ));
    }
    settings::package_type(request.package_type.as_deref())?;
    settings::architectures(request.architectures.as_deref())?;
    let config = Config {
        description: settings::description(request.description.unwrap_or_default())?,
        runtime: settings::runtime(request.runtime)?,
        handler: settings::handler(request.handler)?,
        role: settings::role(required(request.role, "role")?)?,
        memory_size: settings::memory_size(
            request.memory_size.unwrap_or(settings::DEFAULT_MEMORY),
        )?,
        timeout: settings::timeout(request.timeout.unwrap_or(settings::DEFAULT_TIMEOUT))?,
        environment: settings::environment(request.environment)?,
    };
    let zip = code::zip_file(request.code)?;
    // Spares the upload's work when the name is taken; the insert checks again.
    if store::get_function(&service.registry, &subject.account, &subject.name)
        .await?
        .is_some()
    {
        return Err(subject.refused(store::Error::Exists));
    }
    let prepared = code::prepare(&service, zip, config.handler.clone()).await?;
    let code = code::store(&service, &subject.account, prepared).await?;
    let created = store::create(
        &service.registry,
        &subject.account,
        &subject.name,
        &config,
        &code,
        request.publish,
        service.settings.code_storage_limit,
    )
    .await;
    match created {
        Ok(version) => {
            let qualifier = written_qualifier(&version);
            let configuration =
                FunctionConfiguration::of(version, &subject.region, qualifier.as_deref());
            Ok((StatusCode::CREATED, Json(configuration)))
        }
        Err(e) => {
            code::abandon(&service, &subject.account, code.artifact_id).await;
            Err(subject.refused(e))
        }
    }
}
