//! Errors in the shape Lambda's clients parse: the HTTP status, the error type in the
//! `x-amzn-ErrorType` header and a JSON body `{"Type": "User", "message": "…"}`. botocore
//! and the AWS SDKs read the type from the header and the message from the body.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use ember_core::artifacts::ArtifactError;
use ember_core::package::PackageError;
use ember_store::RegistryError;

/// One API error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    /// Lambda's error type, e.g. `ResourceNotFoundException`.
    pub kind: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// 404: the function, version, alias or setting does not exist (or belongs to another
    /// account, which looks the same).
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "ResourceNotFoundException", message)
    }

    /// 400: a parameter is missing, malformed or out of range.
    pub fn invalid_parameter(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameterValueException",
            message,
        )
    }

    /// 400: the request itself cannot be read (bad JSON, wrong types).
    pub fn invalid_request(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "InvalidRequestContentException",
            message,
        )
    }

    /// 409: the resource exists already, or is changing, or a revision id did not match.
    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "ResourceConflictException", message)
    }

    /// 412: the `RevisionId` given does not match the resource's.
    pub fn precondition_failed(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PRECONDITION_FAILED,
            "PreconditionFailedException",
            message,
        )
    }

    /// 413: the request (or the package in it) is larger than allowed.
    pub fn too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestTooLargeException",
            message,
        )
    }

    /// 400: the account's code storage is full.
    pub fn code_storage_exceeded(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "CodeStorageExceededException",
            message,
        )
    }

    /// 429: over a concurrency or rate limit.
    pub fn too_many_requests(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyRequestsException",
            message,
        )
    }

    /// 500: the service failed; the message says what, without secrets.
    pub fn service(message: impl Into<String>) -> ApiError {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "ServiceException",
            message,
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({}): {}", self.kind, self.status, self.message)
    }
}

impl std::error::Error for ApiError {}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({ "Type": "User", "message": self.message });
        let mut response = (self.status, Json(body)).into_response();
        response
            .headers_mut()
            .insert("x-amzn-ErrorType", HeaderValue::from_static(self.kind));
        response
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> ApiError {
        tracing::error!(error = %e, "registry error");
        ApiError::service(format!("registry: {e}"))
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> ApiError {
        RegistryError::from(e).into()
    }
}

impl From<PackageError> for ApiError {
    fn from(e: PackageError) -> ApiError {
        match e {
            PackageError::TooLarge { .. } => ApiError::too_large(e.to_string()),
            _ => ApiError::invalid_parameter(e.to_string()),
        }
    }
}

impl From<ArtifactError> for ApiError {
    fn from(e: ArtifactError) -> ApiError {
        match e {
            ArtifactError::NotFound { .. } => ApiError::not_found(e.to_string()),
            _ => {
                tracing::error!(error = %e, "artifact store error");
                ApiError::service(e.to_string())
            }
        }
    }
}
