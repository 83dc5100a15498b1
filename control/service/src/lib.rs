//! The `ember-control` service: ember's control plane over HTTPS.
//!
//! [`api`] serves Lambda's REST API over the store (`ember-store`) for the callers the
//! [`server`] authenticates; [`fleet`] keeps the workers, and [`router`] sends each
//! invocation to one of them; [`events`] queues asynchronous invocations and runs them
//! through the router; [`logs`] keeps what functions print; [`metrics`] counts what happens
//! for Prometheus; [`admin`] holds the operator's commands. [`service`] is the state the
//! HTTP edge shares.

pub mod admin;
pub mod api;
pub mod events;
pub mod fleet;
pub mod logs;
pub mod metrics;
pub mod router;
pub mod server;
pub mod service;
