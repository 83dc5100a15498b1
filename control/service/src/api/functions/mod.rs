//! Lambda's function and version operations: CreateFunction, GetFunction,
//! GetFunctionConfiguration, ListFunctions, UpdateFunctionCode,
//! UpdateFunctionConfiguration, DeleteFunction, PublishVersion and ListVersionsByFunction.
//!
//! Handlers validate the request, run the CPU-heavy and file work (ZIP and wasm checks,
//! encryption) on the blocking pool, and leave the SQL to
//! [`ember_store::functions`]. A code upload is stored as a fresh artifact before the
//! registry's transaction and deleted again if that transaction does not commit, so a
//! version never names missing code.

mod code;
mod create;
mod read;
mod settings;
mod update;
mod versions;

use std::sync::Arc;

use axum::routing::{get, post, put};
use axum::Router;

use crate::api::target::LATEST;
use crate::service::Service;
use ember_store::functions::Version;

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

/// How a version's ARN is qualified in a response that returns it as the result of a
/// write: published versions by their number, `$LATEST` not at all.
fn written_qualifier(version: &Version) -> Option<String> {
    (version.version != LATEST).then(|| version.version.clone())
}
