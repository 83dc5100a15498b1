//! Extractors that turn every malformed request into Lambda's error shape (axum's own
//! rejections are plain text), and the helpers handlers share.
//!
//! Bodies may carry a whole deployment package (a 50 MiB ZIP is about 67 MiB of base64),
//! so the body limit follows the configured package limit, and large bodies are parsed
//! on the blocking pool rather than on an async worker thread.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use crate::api::error::ApiError;
use crate::service::Service;

/// Room for the JSON around a package's base64 and for bodies without one.
const JSON_ALLOWANCE: u64 = 1024 * 1024;

/// Bodies up to this size are parsed in place.
const PARSE_INLINE: usize = 256 * 1024;

/// A JSON body of Lambda's shape `T`. Empty bodies read as `{}`; members `T` does not
/// know are ignored.
pub struct JsonBody<T>(pub T);

impl<T> FromRequest<Arc<Service>> for JsonBody<T>
where
    T: DeserializeOwned + Send + 'static,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, service: &Arc<Service>) -> Result<Self, ApiError> {
        let limit = body_limit(service.settings.package_limits.zipped);
        let bytes = match Limited::new(req.into_body(), limit).collect().await {
            Ok(collected) => collected.to_bytes(),
            Err(e) if e.is::<LengthLimitError>() => {
                return Err(ApiError::too_large(format!(
                    "Request must be smaller than {limit} bytes"
                )))
            }
            Err(e) => {
                return Err(ApiError::invalid_request(format!(
                    "Could not read the request body: {e}"
                )))
            }
        };
        if bytes.len() <= PARSE_INLINE {
            return parse(&bytes).map(JsonBody);
        }
        blocking(move || parse(&bytes)).await?.map(JsonBody)
    }
}

/// A query string of shape `T`.
pub struct Params<T>(pub T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(query)| Params(query))
            .map_err(|e| ApiError::invalid_parameter(e.body_text()))
    }
}

/// The path parameters, percent-decoded, as `T` (a `String` for one, a tuple for more).
pub struct PathParams<T>(pub T);

impl<T, S> FromRequestParts<S> for PathParams<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(params)| PathParams(params))
            .map_err(|e| ApiError::invalid_parameter(e.body_text()))
    }
}

/// The `{function}` path parameter of a route with no other: a function's name or ARN.
pub struct FunctionName(pub String);

impl<S: Send + Sync> FromRequestParts<S> for FunctionName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let PathParams(name) = PathParams::from_request_parts(parts, state).await?;
        Ok(FunctionName(name))
    }
}

/// A required member that is missing, in Lambda's words.
pub fn required<T>(value: Option<T>, member: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| {
        ApiError::invalid_parameter(format!(
            "1 validation error detected: Value null at '{member}' failed to satisfy \
             constraint: Member must not be null"
        ))
    })
}

/// Runs `work` on the blocking pool: CPU-heavy checks and the synchronous artifact store.
pub async fn blocking<R, F>(work: F) -> Result<R, ApiError>
where
    R: Send + 'static,
    F: FnOnce() -> R + Send + 'static,
{
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        tracing::error!(error = %e, "blocking task failed");
        ApiError::service("An internal task failed")
    })
}

fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}"
    } else {
        bytes
    };
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::invalid_request(format!("Could not parse request body into json: {e}"))
    })
}

/// The largest body accepted: a package of `zipped` bytes in base64, plus the JSON.
fn body_limit(zipped: u64) -> usize {
    let base64 = zipped.div_ceil(3).saturating_mul(4);
    usize::try_from(base64.saturating_add(JSON_ALLOWANCE)).unwrap_or(usize::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_fits_a_full_package_in_base64() {
        let limit = body_limit(ember_core::package::MAX_ZIPPED);
        assert!(limit >= 4 * (50 << 20) / 3 + 1000, "{limit}");
        assert!(limit < 70 << 20, "{limit}");
    }
}
