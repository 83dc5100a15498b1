//! A function's code from request to artifact: base64 decoding, the package and module
//! checks ([`ember_core::module::prepare`]), and the encrypted artifact every version row
//! names.
//!
//! Each upload gets a fresh artifact id, `code-<unix seconds>-<random>`, stored before the
//! registry's transaction. The time in the id lets [`remove_orphan_artifacts`] tell an
//! upload still in progress (in this process or another control instance) from one a
//! crash left behind between the artifact's put and the transaction's commit.

use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::api::error::ApiError;
use crate::api::request::{blocking, required};
use crate::api::shapes::FunctionCode;
use crate::service::Service;
use ember_core::artifacts::ArtifactError;
use ember_core::clock;
use ember_core::module::{self, PreparedModule};
use ember_store::functions::{self as store, Code};

/// The prefix of code artifacts' ids.
const PREFIX: &str = "code-";

/// An unreferenced artifact younger than this may belong to an upload still in progress.
const ORPHAN_AGE: u64 = 3600;

/// `Code` of CreateFunction: only `ZipFile` is supported.
pub fn zip_file(code: Option<FunctionCode>) -> Result<String, ApiError> {
    let code = required(code, "code")?;
    only_zip_file(
        code.zip_file,
        code.s3_bucket.or(code.s3_key).or(code.image_uri).is_some(),
    )
}

/// The ZIP of a request that may also name S3 or image locations, which ember does not
/// fetch from.
pub fn only_zip_file(zip_file: Option<String>, elsewhere: bool) -> Result<String, ApiError> {
    match zip_file {
        Some(zip) if !elsewhere => Ok(zip),
        _ => Err(ApiError::invalid_parameter(
            "Please provide the code as ZipFile: ember does not fetch code from S3 buckets \
             or container images.",
        )),
    }
}

/// Decodes and checks an uploaded ZIP for `handler`, on the blocking pool.
pub async fn prepare(
    service: &Service,
    zip_base64: String,
    handler: String,
) -> Result<PreparedModule, ApiError> {
    let limits = service.settings.package_limits;
    blocking(move || {
        let zip = STANDARD.decode(zip_base64.as_bytes()).map_err(|e| {
            ApiError::invalid_request(format!(
                "Could not parse request body into json: ZipFile is not valid base64 ({e})"
            ))
        })?;
        Ok(module::prepare(&zip, &handler, &limits)?)
    })
    .await?
}

/// Stores a checked module as a new artifact of `account`'s.
pub async fn store(
    service: &Arc<Service>,
    account: &str,
    prepared: PreparedModule,
) -> Result<Code, ApiError> {
    let artifact_id = format!(
        "{PREFIX}{}-{}",
        clock::now_unix(),
        uuid::Uuid::new_v4().simple()
    );
    let code = Code {
        kind: prepared.kind,
        code_sha256: prepared.code_sha256,
        code_size: i64::try_from(prepared.code_size).unwrap_or(i64::MAX),
        artifact_id: artifact_id.clone(),
    };
    let (service, account) = (service.clone(), account.to_owned());
    blocking(move || {
        service
            .artifacts
            .put(&account, &artifact_id, &prepared.bytes)
    })
    .await??;
    Ok(code)
}

/// The module `artifact_id` holds, for re-checking it with another handler.
pub async fn load(
    service: &Arc<Service>,
    account: &str,
    artifact_id: &str,
) -> Result<Vec<u8>, ApiError> {
    let (service, account, artifact_id) =
        (service.clone(), account.to_owned(), artifact_id.to_owned());
    blocking(move || service.artifacts.get(&account, &artifact_id))
        .await?
        // Even a missing artifact is the service's fault here: a version names it.
        .map_err(|e| {
            tracing::error!(error = %e, "reading a version's code");
            ApiError::service(format!("Could not read the function's code: {e}"))
        })
}

/// Deletes a new upload's artifact after its registry write failed. A failed commit may
/// still have committed (a connection lost during PostgreSQL's `COMMIT`), so the registry
/// is asked first; if it cannot tell, the artifact stays for [`remove_orphan_artifacts`].
pub async fn abandon(service: &Arc<Service>, account: &str, artifact_id: String) {
    match store::artifact_in_use(&service.registry, account, &artifact_id).await {
        Ok(false) => discard(service, account, vec![artifact_id]).await,
        Ok(true) => {}
        Err(e) => tracing::warn!(error = %e, %account, %artifact_id, "artifact left behind"),
    }
}

/// Deletes artifacts that no version references any more. Failures are logged, not
/// returned: the registry is already right, and [`remove_orphan_artifacts`] finds what
/// is left.
pub async fn discard(service: &Arc<Service>, account: &str, artifacts: Vec<String>) {
    if artifacts.is_empty() {
        return;
    }
    let (service, account) = (service.clone(), account.to_owned());
    let result = blocking(move || {
        for artifact_id in artifacts {
            match service.artifacts.delete(&account, &artifact_id) {
                Ok(()) | Err(ArtifactError::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, %account, %artifact_id, "artifact left behind")
                }
            }
        }
    })
    .await;
    if let Err(e) = result {
        tracing::warn!(error = %e, "artifacts left behind");
    }
}

/// Deletes code artifacts that no version references and that are older than an hour:
/// what a crash between an upload's artifact put and its registry commit (or a failed
/// delete after one) leaves behind. Meant for the service's startup; safe beside running
/// instances, whose uploads in progress are younger. Returns how many it removed.
pub async fn remove_orphan_artifacts(service: &Arc<Service>) -> Result<usize, ApiError> {
    let (lister, now) = (service.clone(), clock::now_unix());
    let stored = blocking(move || lister.artifacts.list()).await??;
    let referenced = store::referenced_artifacts(&service.registry).await?;
    let orphans: Vec<(String, String)> = stored
        .into_iter()
        .filter(|(_, id)| created_at(id).is_some_and(|t| now.saturating_sub(t) > ORPHAN_AGE))
        .filter(|artifact| !referenced.contains(artifact))
        .collect();
    let count = orphans.len();
    let service = service.clone();
    blocking(move || {
        orphans.iter().try_for_each(
            |(account, id)| match service.artifacts.delete(account, id) {
                Ok(()) | Err(ArtifactError::NotFound { .. }) => Ok(()),
                Err(e) => Err(e),
            },
        )
    })
    .await??;
    Ok(count)
}

/// When a code artifact was created, from its id; `None` for other ids, which are left
/// alone.
fn created_at(artifact_id: &str) -> Option<u64> {
    let (seconds, _) = artifact_id.strip_prefix(PREFIX)?.split_once('-')?;
    seconds.parse().ok()
}
