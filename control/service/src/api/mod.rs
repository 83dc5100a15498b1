//! The Lambda REST API subset (`2015-03-31` and the later concurrency paths) and the
//! CloudWatch Logs subset that reads function logs ([`logs`]), as axum routes over
//! [`Service`]. Requests arrive here authenticated: each carries a
//! [`crate::service::Principal`] in its extensions.

pub mod aliases;
pub mod concurrency;
pub mod download;
pub mod error;
pub mod functions;
pub mod invoke;
pub mod logs;
pub mod paging;
pub mod request;
pub mod request_id;
pub mod shapes;
pub mod subject;
pub mod target;

use std::sync::Arc;

use axum::Router;

use crate::service::Service;

/// Every Lambda route.
pub fn router() -> Router<Arc<Service>> {
    Router::new()
        .merge(aliases::routes())
        .merge(concurrency::routes())
        .merge(functions::routes())
        .merge(invoke::routes())
        .merge(logs::routes())
}
