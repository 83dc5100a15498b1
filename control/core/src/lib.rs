//! The core of ember's control plane: what it decides and keeps, without HTTP or SQL.
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
//! Beside them: [`names`] (what a function, alias or account may be called), [`roles`]
//! (execution-role credentials), [`sealed`] (secrets kept in the database, under the master
//! keys), and the small tools they share: [`clock`], [`random`],
//! [`atomic`] files, [`lock`] files and the private [`keydir`].
//!
//! `docs/artifacts.md` describes the on-disk formats, the key hierarchy and the limits.

pub mod artifacts;
pub mod atomic;
pub mod clock;
pub mod grants;
pub mod keydir;
pub mod keys;
pub mod lock;
pub mod module;
pub mod names;
pub mod package;
pub mod random;
pub mod roles;
pub mod sealed;
