//! GetFunction, GetFunctionConfiguration, ListFunctions and ListVersionsByFunction.
//!
//! Lists are paged like Lambda's: at most 50 items a page whatever `MaxItems` asks, and a
//! `NextMarker` while more remain. The marker is opaque to clients: base64 of the last
//! item's position (`<seq>:<function name>`), so a page starts exactly after it even if
//! functions are created or deleted between pages.

use std::sync::Arc;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::{Extension, Json};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;

use super::body::{FunctionName, Params};
use super::Named;
use crate::api::download;
use crate::api::error::ApiError;
use crate::api::shapes::{
    Concurrency, FunctionCodeLocation, FunctionConfiguration, FunctionsQuery, GetFunctionResponse,
    ListFunctionsResponse, ListVersionsResponse,
};
use crate::api::target;
use crate::registry::functions::{self as store, Version};
use crate::service::{Principal, Service};

/// Most items in one page.
const MAX_PAGE: i64 = 50;

/// Largest `MaxItems` accepted (Lambda's model).
const MAX_ITEMS: i64 = 10_000;

/// `GET /2015-03-31/functions/{function}[?Qualifier=]`.
pub async fn get(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    FunctionName(function): FunctionName,
    Params(query): Params<FunctionsQuery>,
) -> Result<Json<GetFunctionResponse>, ApiError> {
    let named = Named::parse(&function, query.qualifier, &principal, &service)?;
    let version = named.resolve(&service).await?;
    let function = store::get_function(&service.registry, &named.account, &named.name)
        .await?
        .ok_or_else(|| named.not_found())?;
    let location = download::location(
        &service,
        &headers,
        &version.account_id,
        &version.code.artifact_id,
    )?;
    Ok(Json(GetFunctionResponse {
        configuration: FunctionConfiguration::of(
            version,
            &named.region,
            named.qualifier.as_deref(),
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
    let named = Named::parse(&function, query.qualifier, &principal, &service)?;
    let version = named.resolve(&service).await?;
    Ok(Json(FunctionConfiguration::of(
        version,
        &named.region,
        named.qualifier.as_deref(),
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
    let page = page_size(query.max_items.as_deref())?;
    let after = query.marker.as_deref().map(decode_marker).transpose()?;
    let versions = store::list(
        &service.registry,
        &principal.account_id,
        after.as_ref().map(|(seq, name)| (name.as_str(), *seq)),
        page + 1,
        all_versions,
    )
    .await?;
    let region = &service.settings.region;
    let (versions, next_marker) = paged(versions, page);
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
    let named = Named::parse(&function, None, &principal, &service)?;
    let page = page_size(query.max_items.as_deref())?;
    let after_seq = match query.marker.as_deref().map(decode_marker).transpose()? {
        None => -1,
        Some((seq, name)) if name == named.name => seq,
        Some(_) => return Err(invalid_marker()),
    };
    if store::get_function(&service.registry, &named.account, &named.name)
        .await?
        .is_none()
    {
        return Err(named.not_found());
    }
    let versions = store::list_versions(
        &service.registry,
        &named.account,
        &named.name,
        after_seq,
        page + 1,
    )
    .await?;
    let (versions, next_marker) = paged(versions, page);
    let versions = versions
        .into_iter()
        .map(|v| {
            let qualifier = v.version.clone();
            FunctionConfiguration::of(v, &named.region, Some(&qualifier))
        })
        .collect();
    Ok(Json(ListVersionsResponse {
        versions,
        next_marker,
    }))
}

/// `MaxItems` checked as Lambda does, capped at a page.
fn page_size(max_items: Option<&str>) -> Result<i64, ApiError> {
    let Some(max_items) = max_items else {
        return Ok(MAX_PAGE);
    };
    match max_items.parse::<i64>() {
        Ok(n) if (1..=MAX_ITEMS).contains(&n) => Ok(n.min(MAX_PAGE)),
        _ => Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{max_items}' at 'maxItems' failed to \
             satisfy constraint: Member must have value between 1 and {MAX_ITEMS}"
        ))),
    }
}

/// The first `page` of `versions` (fetched one longer to know whether more remain) and
/// the marker of the next page.
fn paged(mut versions: Vec<Version>, page: i64) -> (Vec<Version>, Option<String>) {
    let page = usize::try_from(page).unwrap_or(usize::MAX);
    if versions.len() <= page {
        return (versions, None);
    }
    versions.truncate(page);
    let marker = versions
        .last()
        .map(|v| URL_SAFE_NO_PAD.encode(format!("{}:{}", v.seq, v.function_name)));
    (versions, marker)
}

/// A marker's position: (seq, function name).
fn decode_marker(marker: &str) -> Result<(i64, String), ApiError> {
    let decoded = URL_SAFE_NO_PAD
        .decode(marker)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(invalid_marker)?;
    let (seq, name) = decoded.split_once(':').ok_or_else(invalid_marker)?;
    let seq = seq
        .parse::<i64>()
        .ok()
        .filter(|seq| *seq >= 0)
        .ok_or_else(invalid_marker)?;
    target::check_name(name).map_err(|_| invalid_marker())?;
    Ok((seq, name.to_owned()))
}

fn invalid_marker() -> ApiError {
    ApiError::invalid_parameter("Invalid Marker: use the NextMarker of a previous page")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_round_trip_and_reject_garbage() {
        let marker = URL_SAFE_NO_PAD.encode("12:my-fn_1");
        assert_eq!(decode_marker(&marker).unwrap(), (12, "my-fn_1".to_owned()));
        for bad in [
            "",
            "!!!",
            &URL_SAFE_NO_PAD.encode("x:f"),
            &URL_SAFE_NO_PAD.encode("-1:f"),
            &URL_SAFE_NO_PAD.encode("3:a/b"),
            &URL_SAFE_NO_PAD.encode("3"),
        ] {
            assert_eq!(
                decode_marker(bad).unwrap_err().kind,
                "InvalidParameterValueException",
                "{bad}"
            );
        }
    }

    #[test]
    fn pages_are_capped_at_fifty() {
        assert_eq!(page_size(None).unwrap(), 50);
        assert_eq!(page_size(Some("3")).unwrap(), 3);
        assert_eq!(page_size(Some("10000")).unwrap(), 50);
        for bad in ["0", "10001", "-1", "x"] {
            assert!(page_size(Some(bad)).is_err(), "{bad}");
        }
    }
}
