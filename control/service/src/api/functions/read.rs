//! GetFunction, GetFunctionConfiguration, ListFunctions and ListVersionsByFunction.
//!
//! Lists are paged by [`Page`], keyed by a version's position: `<seq>:<function name>`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};

use crate::api::download;
use crate::api::error::ApiError;
use crate::api::paging::{invalid_marker, Page};
use crate::api::request::{FunctionName, Params};
use crate::api::shapes::{
    Concurrency, FunctionCodeLocation, FunctionConfiguration, FunctionsQuery, GetFunctionResponse,
    ListFunctionsResponse, ListVersionsResponse,
};
use crate::api::subject::Subject;
use crate::api::target;
use crate::service::{Principal, Service};
use ember_store::functions::{self as store, Version};

/// `GET /2015-03-31/functions/{function}[?Qualifier=]`.
pub async fn get(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<Json<GetFunctionResponse>, ApiError> {
    let subject = Subject::parse(&function, query.qualifier, &principal, &service)?;
    let version = subject.resolve(&service).await?;
    let function = store::get_function(&service.registry, &subject.account, &subject.name)
        .await?
        .ok_or_else(|| subject.not_found())?;
    let location = download::location(
        &service,
        &headers,
        &version.account_id,
        &version.code.artifact_id,
    )?;
    Ok(Json(GetFunctionResponse {
        configuration: FunctionConfiguration::of(
            version,
            &subject.region,
            subject.qualifier.as_deref(),
        ),
        code: FunctionCodeLocation {
            repository_type: "S3",
            location,
        },
        concurrency: function.reserved_concurrency.map(|reserved| Concurrency {
            reserved_concurrent_executions: reserved,
        }),
    }))
}

/// `GET /2015-03-31/functions/{function}/configuration[?Qualifier=]`.
pub async fn get_configuration(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<Json<FunctionConfiguration>, ApiError> {
    let subject = Subject::parse(&function, query.qualifier, &principal, &service)?;
    let version = subject.resolve(&service).await?;
    Ok(Json(FunctionConfiguration::of(
        version,
        &subject.region,
        subject.qualifier.as_deref(),
    )))
}

/// `GET /2015-03-31/functions/[?FunctionVersion=ALL&Marker=&MaxItems=]`: the account's
/// functions by name, `$LATEST` only (unqualified ARNs) or every version (qualified).
pub async fn list(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    Params(query): Params<FunctionsQuery>,
) -> Result<Json<ListFunctionsResponse>, ApiError> {
    let all_versions = match query.function_version.as_deref() {
        None => false,
        Some("ALL") => true,
        Some(other) => {
            return Err(ApiError::invalid_parameter(format!(
                "1 validation error detected: Value '{other}' at 'functionVersion' failed to \
                 satisfy constraint: Member must satisfy enum value set: [ALL]"
            )))
        }
    };
    let page = Page::parse(
        query.marker.as_deref(),
        query.max_items.as_deref(),
        position,
    )?;
    let versions = store::list(
        &service.registry,
        &principal.account_id,
        page.after.as_ref().map(|(seq, name)| (name.as_str(), *seq)),
        page.limit(),
        all_versions,
    )
    .await?;
    let region = &service.settings.region;
    let (versions, next_marker) = page.split(versions, position_of);
    let functions = versions
        .into_iter()
        .map(|v| {
            let qualifier = all_versions.then(|| v.version.clone());
            FunctionConfiguration::of(v, region, qualifier.as_deref())
        })
        .collect();
    Ok(Json(ListFunctionsResponse {
        functions,
        next_marker,
    }))
}

/// `GET /2015-03-31/functions/{function}/versions[?Marker=&MaxItems=]`: `$LATEST`, then
/// the published versions by number, each with its qualified ARN.
pub async fn list_versions(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<Json<ListVersionsResponse>, ApiError> {
    let subject = Subject::parse(&function, None, &principal, &service)?;
    let page = Page::parse(
        query.marker.as_deref(),
        query.max_items.as_deref(),
        position,
    )?;
    let after_seq = match &page.after {
        None => -1,
        Some((seq, name)) if *name == subject.name => *seq,
        Some(_) => return Err(invalid_marker()),
    };
    if store::get_function(&service.registry, &subject.account, &subject.name)
        .await?
        .is_none()
    {
        return Err(subject.not_found());
    }
    let versions = store::list_versions(
        &service.registry,
        &subject.account,
        &subject.name,
        after_seq,
        page.limit(),
    )
    .await?;
    let (versions, next_marker) = page.split(versions, position_of);
    let versions = versions
        .into_iter()
        .map(|v| {
            let qualifier = v.version.clone();
            FunctionConfiguration::of(v, &subject.region, Some(&qualifier))
        })
        .collect();
    Ok(Json(ListVersionsResponse {
        versions,
        next_marker,
    }))
}

/// A marker's key: (seq, function name).
fn position(key: &str) -> Option<(i64, String)> {
    let (seq, name) = key.split_once(':')?;
    let seq = seq.parse::<i64>().ok().filter(|seq| *seq >= 0)?;
    target::check_name(name).ok()?;
    Some((seq, name.to_owned()))
}

fn position_of(version: &Version) -> String {
    format!("{}:{}", version.seq, version.function_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_round_trip_and_reject_garbage() {
        assert_eq!(position("12:my-fn_1"), Some((12, "my-fn_1".to_owned())));
        for bad in ["", "x:f", "-1:f", "3:a/b", "3", "3:"] {
            assert_eq!(position(bad), None, "{bad}");
        }
    }
}
