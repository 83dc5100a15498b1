//! Code downloads by grant: `GET /artifacts/{account}/{artifact}?grant=TOKEN` answers the
//! decrypted module. This is where GetFunction's `Code.Location` points (like Lambda's
//! pre-signed S3 URL, valid for [`LOCATION_LIFETIME`]) and what a worker fetches code
//! with. The grant is the only credential: it names exactly one artifact of one account and
//! expires, so the route sits outside SigV4 authentication. Grants issued to workers are
//! refused here: they work only for their worker, on the fleet listener.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::api::request::blocking;
use crate::service::Service;
use ember_core::clock;
use ember_core::grants::Holder;

/// How long a `Code.Location` URL works.
pub const LOCATION_LIFETIME: u64 = 600;

#[derive(Deserialize)]
pub struct GrantQuery {
    grant: String,
}

/// The download route; no authentication layer goes in front of it.
pub fn routes() -> Router<Arc<Service>> {
    Router::new().route("/artifacts/{account}/{artifact}", get(download))
}

/// A URL on this service, as reached through `headers`' `Host`, that downloads `account`'s
/// `artifact_id` for the next [`LOCATION_LIFETIME`] seconds.
pub fn location(
    service: &Service,
    headers: &HeaderMap,
    account: &str,
    artifact_id: &str,
) -> Result<String, ApiError> {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .ok_or_else(|| ApiError::invalid_request("The request has no Host header"))?;
    let expires_at = clock::now_unix() + LOCATION_LIFETIME;
    let grant = service
        .grants
        .issue(account, artifact_id, Holder::Url, expires_at)
        .map_err(|e| ApiError::service(e.to_string()))?;
    Ok(format!(
        "https://{host}/artifacts/{account}/{artifact_id}?grant={grant}"
    ))
}

async fn download(
    State(service): State<Arc<Service>>,
    Path((account, artifact)): Path<(String, String)>,
    Query(query): Query<GrantQuery>,
) -> Result<Response, ApiError> {
    let grant = service
        .grants
        .verify(&query.grant, &artifact, Holder::Url, clock::now_unix())
        .map_err(|e| denied(&e.to_string()))?;
    if grant.account != account {
        return Err(denied("grant is for another account"));
    }
    let bytes = blocking(move || service.artifacts.get(&account, &artifact)).await??;
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

fn denied(reason: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "AccessDeniedException",
        format!("Code download refused: {reason}"),
    )
}
