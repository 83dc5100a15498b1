//! The sandbox every micro-VM runs in, and the zygote that makes such processes: see
//! `docs/isolation.md`.
//!
//! A VM process holds its guest memory, its KVM descriptors and one channel to the worker,
//! and nothing else: [`sandbox::enter`] takes the rest away before it runs guest code, and
//! [`seccomp`] kills it if it tries anything its job does not need.

pub mod cgroup;
pub mod channel;
pub mod sandbox;
pub mod seccomp;
pub mod zygote;

pub use cgroup::{Cgroups, Limits};
pub use channel::Channel;
pub use sandbox::JailConfig;
pub use zygote::{VmProcess, Zygote};
