//! The function a request names, as every operation reads it: in the caller's account,
//! with the qualifier given in the name or a `Qualifier` parameter, and the ARNs and
//! errors that speak of it.

use crate::api::error::ApiError;
use crate::api::target::{self, LATEST};
use crate::service::{Principal, Service};
use ember_store::functions::{self as store, Version};

/// A function named in a request, inside the caller's account.
pub struct Subject {
    pub account: String,
    pub region: String,
    pub name: String,
    /// The version or alias named, if any.
    pub qualifier: Option<String>,
}

impl Subject {
    /// Parses a `FunctionName` (path parameter or body member) and merges the qualifier it
    /// carries with `qualifier` from the request's parameters; they must agree.
    pub fn parse(
        value: &str,
        qualifier: Option<String>,
        principal: &Principal,
        service: &Service,
    ) -> Result<Subject, ApiError> {
        let region = &service.settings.region;
        let parsed = target::parse(value, principal, region)?;
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
        Ok(Subject {
            account: principal.account_id.clone(),
            region: region.clone(),
            name: parsed.name,
            qualifier,
        })
    }

    /// Parses a `FunctionName` for an operation on the whole function, where a version or
    /// alias in the name would be ignored silently otherwise.
    pub fn unqualified(
        value: &str,
        principal: &Principal,
        service: &Service,
    ) -> Result<Subject, ApiError> {
        let subject = Subject::parse(value, None, principal, service)?;
        if subject.qualifier.is_some() {
            return Err(ApiError::invalid_parameter(format!(
                "This operation does not accept a qualified function name or ARN: {value}"
            )));
        }
        Ok(subject)
    }

    /// For the operations that change `$LATEST`: a qualifier other than `$LATEST` names a
    /// published version, and those are immutable.
    pub fn only_latest(self) -> Result<Subject, ApiError> {
        match self.qualifier.as_deref() {
            None | Some(LATEST) => Ok(self),
            Some(q) => Err(ApiError::invalid_parameter(format!(
                "Only $LATEST can be changed; version or alias {q:?} cannot (published \
                 versions are immutable)"
            ))),
        }
    }

    /// The ARN as named.
    pub fn arn(&self) -> String {
        target::function_arn(
            &self.region,
            &self.account,
            &self.name,
            self.qualifier.as_deref(),
        )
    }

    /// The ARN of one of the function's versions or aliases.
    pub fn qualified_arn(&self, qualifier: &str) -> String {
        target::function_arn(&self.region, &self.account, &self.name, Some(qualifier))
    }

    /// 404 for the function as named.
    pub fn not_found(&self) -> ApiError {
        ApiError::not_found(format!("Function not found: {}", self.arn()))
    }

    /// 404 for one of its versions.
    pub fn version_not_found(&self, version: &str) -> ApiError {
        ApiError::not_found(format!(
            "Function not found: {}",
            self.qualified_arn(version)
        ))
    }

    /// 404 for one of its aliases.
    pub fn alias_not_found(&self, alias: &str) -> ApiError {
        ApiError::not_found(format!(
            "Cannot find alias arn: {}",
            self.qualified_arn(alias)
        ))
    }

    /// The version the request names (`$LATEST` when unqualified).
    pub async fn resolve(&self, service: &Service) -> Result<Version, ApiError> {
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
    pub fn refused(&self, error: store::Error) -> ApiError {
        match error {
            store::Error::NotFound => self.not_found(),
            store::Error::Exists => {
                ApiError::conflict(format!("Function already exist: {}", self.name))
            }
            store::Error::RevisionMismatch => revision_mismatch(),
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

/// 412 for a `RevisionId` that is not the function's or alias's current one.
pub fn revision_mismatch() -> ApiError {
    ApiError::precondition_failed(
        "The Revision Id provided does not match the latest Revision Id. Call the \
         GetFunction/GetAlias API to retrieve the latest Revision Id",
    )
}
