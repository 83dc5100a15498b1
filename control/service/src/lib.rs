//! The `ember-control` service: ember's control plane over HTTPS.
//!
//! Each module imports only the ones listed before it:
//!
//! - [`metrics`] counts what happens for Prometheus; [`logs`] keeps what functions print;
//!   [`tls`] holds the local CA and the API's certificate;
//! - [`fleet`] keeps the workers (their live state, leases, provisioned concurrency, the
//!   client that calls them);
//! - [`router`] sends each invocation to one of them, and [`events`] queues asynchronous
//!   invocations and runs them through the router;
//! - [`service`] builds all of these from the data directory: the state the HTTP edge
//!   shares;
//! - [`api`] serves Lambda's REST API over the store (`ember-store`), and [`server`]
//!   serves it over HTTPS with SigV4 and runs the fleet listener;
//! - [`admin`] holds the operator's commands.

pub mod admin;
pub mod api;
pub mod events;
pub mod fleet;
pub mod logs;
pub mod metrics;
pub mod router;
pub mod server;
pub mod service;
pub mod tls;
