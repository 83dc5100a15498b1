//! ember's control-plane store: everything control keeps in SQL, SQLite by default or
//! PostgreSQL when several control instances share one database ([`database`]).
//!
//! One module per table family: [`accounts`] and their keys, [`functions`] and their
//! versions, [`aliases`], [`concurrency`] settings, the [`workers`] of the fleet, the
//! asynchronous [`events`] queue and function [`logs`]. Each exposes plain functions over
//! the pool or a connection; `database`'s comment describes the locking rules writes share.

pub mod accounts;
pub mod aliases;
pub mod concurrency;
pub mod database;
pub mod events;
pub mod functions;
pub mod logs;
pub mod workers;

pub use database::{Registry, RegistryError, DB_FILE};
