//! CreateFunction.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};

use super::body::JsonBody;
use super::{code, settings, written_qualifier, Named};
use crate::api::error::ApiError;
use crate::api::shapes::{CreateFunctionRequest, FunctionConfiguration};
use crate::registry::functions::{self as store, Config};
use crate::service::{Principal, Service};

/// `POST /2015-03-31/functions`: checks the settings, then the code, stores it, and
/// registers the function (and version 1 with `Publish`).
pub async fn create(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    JsonBody(request): JsonBody<CreateFunctionRequest>,
) -> Result<(StatusCode, Json<FunctionConfiguration>), ApiError> {
    let function = settings::required(request.function_name, "functionName")?;
    let named = Named::parse(&function, None, &principal, &service)?;
    if named.qualifier.is_some() {
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
        role: settings::role(settings::required(request.role, "role")?)?,
        memory_size: settings::memory_size(
            request.memory_size.unwrap_or(settings::DEFAULT_MEMORY),
        )?,
        timeout: settings::timeout(request.timeout.unwrap_or(settings::DEFAULT_TIMEOUT))?,
        environment: settings::environment(request.environment)?,
    };
    let zip = code::zip_file(request.code)?;
    // Spares the upload's work when the name is taken; the insert checks again.
    if store::get_function(&service.registry, &named.account, &named.name)
        .await?
        .is_some()
    {
        return Err(named.refused(store::Error::Exists));
    }
    let prepared = code::prepare(&service, zip, config.handler.clone()).await?;
    let code = code::store(&service, &named.account, prepared).await?;
    let created = store::create(
        &service.registry,
        &named.account,
        &named.name,
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
                FunctionConfiguration::of(version, &named.region, qualifier.as_deref());
            Ok((StatusCode::CREATED, Json(configuration)))
        }
        Err(e) => {
            code::abandon(&service, &named.account, code.artifact_id).await;
            Err(named.refused(e))
        }
    }
}
