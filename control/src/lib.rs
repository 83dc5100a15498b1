//! ember's control plane: the `ember-control` service and the `ember` CLI build on it.
//!
//! The artifact path of a function's code, from upload to a worker:
//!
//! 1. [`package`] checks an uploaded ZIP (sizes, zip bombs, path traversal) and finds the
//!    wasm module in it;
//! 2. [`module`] validates that module once, at upload, and tells a command from a reactor;
//! 3. [`artifacts`] stores the module encrypted under a per-artifact data key, wrapped by a
//!    master key from [`keys`];
//! 4. [`grants`] issues the short-lived, artifact-scoped tokens a worker presents to fetch
//!    the code.
//!
//! The service: [`registry`] keeps accounts, functions, versions, aliases and concurrency
//! settings in SQL; [`api`] serves Lambda's REST API over them for the [`service`]'s
//! authenticated callers; [`fleet`] keeps the workers, and [`router`] sends each
//! invocation to one of them; [`events`] queues asynchronous invocations and runs them
//! through the router; [`metrics`] counts what happens for Prometheus.
//!
//! `docs/artifacts.md` describes the on-disk formats, the key hierarchy and the limits.

pub mod admin;
pub mod api;
pub mod artifacts;
pub mod cli;
pub mod clock;
pub mod events;
pub mod fleet;
pub mod grants;
pub mod keys;
pub mod local;
pub mod logs;
pub mod metrics;
pub mod module;
pub mod names;
pub mod package;
pub mod registry;
pub mod roles;
pub mod router;
pub mod server;
pub mod service;

mod atomic;
mod keydir;
mod lock;
mod random;
