//! Lambda's Invoke: `POST /2015-03-31/functions/{name}/invocations`. The HTTP side only:
//! the invocation type (`X-Amz-Invocation-Type`), the log type (`X-Amz-Log-Type`), the
//! payload limits, and how an invocation's outcome becomes Lambda's response; running it
//! is [`crate::router::invoke`]'s, which the event queue ([`crate::events`]) calls the
//! same way.
//!
//! - `RequestResponse` (the default): the function's response with
//!   `X-Amz-Executed-Version`; a function error is still a 200, with
//!   `X-Amz-Function-Error: Unhandled` and Lambda's `{"errorMessage", "errorType"}` body;
//!   `X-Amz-Log-Type: Tail` adds `X-Amz-Log-Result`, the base64 of the log's last 4 KiB.
//! - `DryRun`: 204 when the function (version, alias) exists in the caller's account,
//!   which is all the permission an account's own keys or roles need.
//! - `Event`: when the function (version, alias) exists, the event (at most 256 KiB) is
//!   stored and the answer is 202 with no body; its `x-amzn-RequestId` is the event's id.
//!   It runs later, with retries ([`crate::events`]).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Json, Router};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use ember_fleet::messages::Status;
use ember_wire::function::{LOG_TAIL, PAYLOAD_MAX};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::api::request::{FunctionName, Params};
use crate::api::request_id::RequestId;
use crate::api::subject::Subject;
use crate::events;
use crate::router::{self, Invocation, InvokeError, Invoked};
use crate::service::{Principal, Service};
use ember_store::concurrency::InvokeLimit;

/// The Invoke route.
pub fn routes() -> Router<Arc<Service>> {
    Router::new().route("/2015-03-31/functions/{function}/invocations", post(invoke))
}

#[derive(Debug, Deserialize)]
struct InvokeQuery {
    #[serde(rename = "Qualifier")]
    qualifier: Option<String>,
}

/// `X-Amz-Invocation-Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InvocationType {
    RequestResponse,
    Event,
    DryRun,
}

async fn invoke(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    FunctionName(function): FunctionName,
    Params(query): Params<InvokeQuery>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let subject = Subject::parse(&function, query.qualifier, &principal, &service)?;
    let not_found = |e: InvokeError| match e {
        InvokeError::NotFound => subject.not_found(),
        other => failure(other),
    };
    let kind = invocation_type(&headers)?;
    if kind != InvocationType::RequestResponse {
        // Checked now: an event for a function that does not exist is refused, not queued.
        router::target(
            &service.invoker,
            &subject.account,
            &subject.name,
            subject.qualifier.as_deref(),
        )
        .await
        .map_err(not_found)?;
        if kind == InvocationType::DryRun {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
    let limit = match kind {
        InvocationType::Event => events::PAYLOAD_MAX,
        _ => PAYLOAD_MAX,
    };
    let invocation = Invocation {
        account: subject.account.clone(),
        function: subject.name.clone(),
        qualifier: subject.qualifier.clone(),
        payload: read_payload(body, limit).await?,
        request_id,
    };
    if kind == InvocationType::Event {
        service.events.enqueue(invocation).await.map_err(|e| {
            tracing::error!(error = %e, "could not store an event");
            ApiError::service("The event could not be stored; try again")
        })?;
        return Ok(StatusCode::ACCEPTED.into_response());
    }
    let tail = headers
        .get("x-amz-log-type")
        .is_some_and(|value| value.as_bytes().eq_ignore_ascii_case(b"Tail"));
    match router::invoke(&service.invoker, invocation).await {
        Ok(invoked) => Ok(respond(invoked, tail)),
        Err(InvokeError::Throttled { limit }) => Ok(throttled(limit)),
        Err(e) => Err(not_found(e)),
    }
}

fn invocation_type(headers: &HeaderMap) -> Result<InvocationType, ApiError> {
    let Some(value) = headers.get("x-amz-invocation-type") else {
        return Ok(InvocationType::RequestResponse);
    };
    match value.to_str().unwrap_or_default() {
        "RequestResponse" => Ok(InvocationType::RequestResponse),
        "Event" => Ok(InvocationType::Event),
        "DryRun" => Ok(InvocationType::DryRun),
        other => Err(ApiError::invalid_parameter(format!(
            "1 validation error detected: Value '{other}' at 'invocationType' failed to \
             satisfy constraint: Member must satisfy enum value set: [Event, \
             RequestResponse, DryRun]"
        ))),
    }
}

/// The event: at most `limit` bytes (6 MiB, 256 KiB for `Event`); none at all is `{}`, as
/// Lambda passes it.
async fn read_payload(body: Body, limit: usize) -> Result<Vec<u8>, ApiError> {
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<LengthLimitError>() => {
            return Err(ApiError::too_large(format!(
                "Request must be smaller than {limit} bytes for the InvokeFunction operation"
            )))
        }
        Err(e) => {
            return Err(ApiError::invalid_request(format!(
                "Could not read the request body: {e}"
            )))
        }
    };
    Ok(if bytes.is_empty() {
        b"{}".to_vec()
    } else {
        bytes.to_vec()
    })
}

/// Lambda's answer for an invocation that ran.
fn respond(invoked: Invoked, tail: bool) -> Response {
    let Invoked {
        version,
        worker_id,
        status,
        mut payload,
        mut error_type,
        log_tail,
        init_us: _,
    } = invoked;
    if status == Status::ServiceError {
        return failure(InvokeError::Internal(format!(
            "The function could not run: {}",
            error_message(&payload)
        )))
        .into_response();
    }
    if status == Status::Success && payload.len() > PAYLOAD_MAX {
        error_type = Some("Function.ResponseSizeTooLarge".to_owned());
        payload = error_body(
            "Function.ResponseSizeTooLarge",
            &format!(
                "Response payload size ({} bytes) exceeded maximum allowed payload size \
                 ({PAYLOAD_MAX} bytes).",
                payload.len()
            ),
        );
    }
    tracing::debug!(worker = %worker_id, %version, ?error_type, "invoked");
    let mut response = (StatusCode::OK, payload).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(value) = HeaderValue::from_str(&version) {
        headers.insert("x-amz-executed-version", value);
    }
    if error_type.is_some() {
        headers.insert(
            "x-amz-function-error",
            HeaderValue::from_static("Unhandled"),
        );
    }
    if tail {
        let bytes = log_tail.as_bytes();
        let last = &bytes[bytes.len().saturating_sub(LOG_TAIL)..];
        let encoded =
            HeaderValue::from_str(&STANDARD.encode(last)).expect("base64 is a valid header value");
        headers.insert("x-amz-log-result", encoded);
    }
    response
}

/// `{"errorMessage", "errorType"}`, as Lambda reports a function error.
fn error_body(error_type: &str, message: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "errorMessage": message,
        "errorType": error_type,
    }))
    .expect("a JSON object serializes")
}

/// The message in an error body, or the body itself.
fn error_message(payload: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|body| body["errorMessage"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(payload).into_owned())
}

/// What an invocation that did not run looks like to the caller.
fn failure(e: InvokeError) -> ApiError {
    match e {
        InvokeError::NotFound => ApiError::not_found("Function not found"),
        InvokeError::NoWorker => {
            ApiError::service("No worker is available to run the function; try again later")
        }
        InvokeError::WorkerFailed(reason) => {
            tracing::warn!(%reason, "invocation lost with its worker");
            ApiError::service("The worker running the invocation failed")
        }
        InvokeError::Internal(message) => ApiError::service(message),
        InvokeError::Throttled { .. } => ApiError::too_many_requests("Rate Exceeded."),
        InvokeError::NoCapacity => ApiError::too_many_requests(
            "Rate Exceeded. No worker has room for another environment of the function; try again",
        ),
    }
}

/// 429 with Lambda's `Reason`, which SDKs expose to tell the throttles apart: the
/// function's reservation, or the account's limit (its unreserved pool).
fn throttled(limit: InvokeLimit) -> Response {
    let (message, reason) = match limit {
        InvokeLimit::Reserved(n) => (
            format!("Rate Exceeded. The function's reserved concurrency ({n}) is in use."),
            "ReservedFunctionConcurrentInvocationLimitExceeded",
        ),
        InvokeLimit::Unreserved(n) => (
            format!("Rate Exceeded. The account's unreserved concurrency ({n}) is in use."),
            "ConcurrentInvocationLimitExceeded",
        ),
    };
    let body = serde_json::json!({
        "Type": "User",
        "message": message,
        "Reason": reason,
    });
    let mut response = (StatusCode::TOO_MANY_REQUESTS, Json(body)).into_response();
    response.headers_mut().insert(
        "x-amzn-ErrorType",
        HeaderValue::from_static("TooManyRequestsException"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_invocation_types_as_lambda_names_them() {
        let mut headers = HeaderMap::new();
        assert_eq!(
            invocation_type(&headers).unwrap(),
            InvocationType::RequestResponse
        );
        for (value, expected) in [
            ("DryRun", InvocationType::DryRun),
            ("Event", InvocationType::Event),
        ] {
            headers.insert("x-amz-invocation-type", HeaderValue::from_static(value));
            assert_eq!(invocation_type(&headers).unwrap(), expected);
        }
        headers.insert("x-amz-invocation-type", HeaderValue::from_static("Later"));
        assert_eq!(
            invocation_type(&headers).unwrap_err().kind,
            "InvalidParameterValueException"
        );
    }

    #[test]
    fn function_errors_are_200_with_lambdas_headers() {
        let invoked = Invoked {
            version: "2".into(),
            worker_id: "w-1".into(),
            status: Status::FunctionError,
            payload: error_body("Runtime.Trap", "unreachable"),
            error_type: Some("Runtime.Trap".into()),
            log_tail: "x".repeat(5000),
            init_us: None,
        };
        let response = respond(invoked, true);
        assert_eq!(response.status(), StatusCode::OK);
        let headers = response.headers();
        assert_eq!(headers["x-amz-executed-version"], "2");
        assert_eq!(headers["x-amz-function-error"], "Unhandled");
        let tail = STANDARD
            .decode(headers["x-amz-log-result"].as_bytes())
            .unwrap();
        assert_eq!(tail.len(), LOG_TAIL);
        assert_eq!(error_message(&error_body("T", "m")), "m");
        assert_eq!(error_message(b"plain"), "plain");
    }
}
