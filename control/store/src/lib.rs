//! ember's control-plane store: everything control keeps in SQL, SQLite by default or
//! PostgreSQL when several control instances share one database ([`database`]).
//!
//! One module per table family: [`accounts`] and their keys, [`functions`] and their
//! versions, [`aliases`], [`concurrency`] settings, the [`workers`] of the fleet, the
//! asynchronous [`events`] queue and function [`logs`]; [`sealing`] keeps the secrets among
//! them sealed under the master keys. Each exposes plain functions over
//! the pool (or the [`Registry`] that holds it), each owning its transaction and
//! answering with a result or its module's typed error; [`database`]'s comment describes
//! the locking rules the writes share.

pub mod accounts;
pub mod aliases;
pub mod concurrency;
pub mod database;
pub mod events;
pub mod functions;
pub mod join_tokens;
pub mod logs;
pub mod sealing;
pub mod workers;

#[cfg(any(test, feature = "test-util"))]
pub mod fixtures;

pub use database::{Registry, RegistryError, DB_FILE};
