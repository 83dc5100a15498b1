//! ember's control plane, as a library the `ember-control` service builds on.
//!
//! So far it holds the artifact path of a function's code, from upload to a worker:
//!
//! 1. [`package`] checks an uploaded ZIP (sizes, zip bombs, path traversal) and finds the
//!    wasm module in it;
//! 2. [`module`] validates that module once, at upload, and tells a command from a reactor;
//! 3. [`artifacts`] stores the module encrypted under a per-artifact data key, wrapped by a
//!    master key from [`keys`];
//! 4. [`grants`] issues the short-lived, artifact-scoped tokens a worker presents to fetch
//!    the code.
//!
//! `docs/artifacts.md` describes the on-disk formats, the key hierarchy and the limits.

pub mod artifacts;
pub mod grants;
pub mod keys;
pub mod module;
pub mod names;
pub mod package;

mod atomic;
mod keydir;
mod lock;
mod random;
