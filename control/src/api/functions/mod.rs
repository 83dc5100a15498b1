//! Lambda's function and version operations: CreateFunction, GetFunction,
//! GetFunctionConfiguration, ListFunctions, UpdateFunctionCode,
//! UpdateFunctionConfiguration, DeleteFunction, PublishVersion and ListVersionsByFunction.
//!
//! Handlers validate the request, run the CPU-heavy and file work (ZIP and wasm checks,
//! encryption) on the blocking pool, and leave the SQL to
//! [`crate::registry::functions`]. A code upload is stored as a fresh artifact before the
//! registry's transaction and deleted again if that transaction does not commit, so a
//! version never names missing code.

pub mod body;
mod code;
mod create;
mod read;
mod settings;
mod update;
mod versions;

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;

use crate::api::error::ApiError;
use crate::api::target::{self, LATEST};
use crate::registry::functions::{self as store, Version};
use crate::service::{Principal, Service};

pub use code::remove_orphan_artifacts;

/// The function and version routes.
pub fn routes() -> Router<Arc<Service>> {
    Router::new()
        .route(
            "/2015-03-31/functions",
            post(create::create).get(read::list),
        )
        // The AWS CLI lists with a trailing slash.
        .route("/2015-03-31/functions/", get(read::list))
        .route(
            "/2015-03-31/functions/{function}",
            get(read::get).delete(versions::delete),
        )
        .route(
            "/2015-03-31/functions/{function}/configuration",
            get(read::get_configuration).put(update::configuration),
        )
        .route("/2015-03-31/functions/{function}/code", put(update::code))
        .route(
            "/2015-03-31/functions/{function}/versions",
            post(versions::publish).get(read::list_versions),
        )
}

/// The function a request names, in the caller's account, with the qualifier given in
/// the name or the `Qualifier` parameter.
struct Named {
    account: String,
    name: String,
    qualifier: Option<String>,
    region: String,
}

impl Named {
    fn parse(
        function: &str,
        qualifier: Option<String>,
        principal: &Principal,
        service: &Service,
    ) -> Result<Named, ApiError> {
        let region = &service.settings.region;
        let parsed = target::parse(function, principal, region)?;
        let qualifier = match (parsed.qualifier, qualifier) {
            (Some(a), Some(b)) if a != b => {
                return Err(ApiError::invalid_parameter(
                    "The derived qualifier from the function name does not match the \
                     specified qualifier.",
                ))
            }
            (a, b) => a.or(b),
        };
        if let Some(qualifier) = &qualifier {
            target::check_qualifier(qualifier)?;
        }
        Ok(Named {
            account: principal.account_id.clone(),
            name: parsed.name,
            qualifier,
            region: region.clone(),
        })
    }

    /// For the operations that change `$LATEST`: a qualifier other than `$LATEST` names a
    /// published version, and those are immutable.
    fn only_latest(self) -> Result<Named, ApiError> {
        match self.qualifier.as_deref() {
            None | Some(LATEST) => Ok(self),
            Some(q) => Err(ApiError::invalid_parameter(format!(
                "Only $LATEST can be changed; version or alias {q:?} cannot (published \
                 versions are immutable)"
            ))),
        }
    }

    /// The ARN as named, for messages.
    fn arn(&self) -> String {
        target::function_arn(
            &self.region,
            &self.account,
            &self.name,
            self.qualifier.as_deref(),
        )
    }

    fn not_found(&self) -> ApiError {
        ApiError::not_found(format!("Function not found: {}", self.arn()))
    }

    /// The version the request names (`$LATEST` when unqualified).
    async fn resolve(&self, service: &Service) -> Result<Version, ApiError> {
        store::resolve(
            &service.registry,
            &self.account,
            &self.name,
            self.qualifier.as_deref(),
        )
        .await?
        .ok_or_else(|| self.not_found())
    }

    /// The registry's refusal as Lambda words it.
    fn refused(&self, error: store::Error) -> ApiError {
        match error {
            store::Error::NotFound => self.not_found(),
            store::Error::Exists => {
                ApiError::conflict(format!("Function already exist: {}", self.name))
            }
            store::Error::RevisionMismatch => ApiError::precondition_failed(
                "The Revision Id provided does not match the latest Revision Id. Call the \
                 GetFunction/GetAlias API to retrieve the latest Revision Id",
            ),
            store::Error::CodeSha256Mismatch => ApiError::precondition_failed(
                "CodeSHA256 is different from the current CodeSHA256 in $LATEST. Please try \
                 again with the CodeSHA256 in $LATEST.",
            ),
            store::Error::StorageExceeded { needed, limit } => {
                ApiError::code_storage_exceeded(format!(
                    "Code storage limit exceeded: the account's code would take {needed} \
                     bytes, over its limit of {limit}"
                ))
            }
            store::Error::InUse(aliases) => ApiError::conflict(format!(
                "Unable to delete version because the following aliases reference it: [{}]",
                aliases.join(", ")
            )),
            store::Error::Changed => ApiError::conflict(format!(
                "The operation cannot be performed at this time. An update is in progress \
                 for resource: {}",
                self.arn()
            )),
            store::Error::Sql(e) => e.into(),
        }
    }
}

/// How a version's ARN is qualified in a response that returns it as the result of a
/// write: published versions by their number, `$LATEST` not at all.
fn written_qualifier(version: &Version) -> Option<String> {
    (version.version != LATEST).then(|| version.version.clone())
}
