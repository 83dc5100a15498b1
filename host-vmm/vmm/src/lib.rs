//! ember's VMM: micro-VMs on KVM that enter the `no_std` guest-init directly in ring 3 and
//! talk to it over virtio-vsock. See `docs/microvm.md` for the design.
//!
//! Modules, lowest first (each imports only those before it): [`log_budget`] (rate limits
//! for what guests log), `kvm` (the `/dev/kvm` handle), `memory` (guest RAM), `devices` (serial and virtio-vsock), [`vm`] (one
//! micro-VM and its snapshots), [`floor`] (the raw KVM floor), [`client`] (the frame
//! protocol) and [`function`] (execution environments and their pool). [`process`] is a VM
//! process's side of its channel to the worker (`ember-vm`, `docs/isolation.md`).

pub mod client;
pub mod cpuid;
mod devices;
pub mod floor;
pub mod function;
#[doc(hidden)]
pub mod fuzzing;
mod guest_image;
mod kvm;
pub mod log_budget;
mod memory;
pub mod process;
pub mod vm;

pub use client::{ClientError, GuestClient};
pub use devices::vsock::stream::VsockStream;
pub use devices::vsock::{StreamError, VsockError};
pub use kvm::{open_kvm, KvmError};
pub use memory::MemoryError;
pub use vm::{GuestFault, Vm, VmConfig, VmError, VmExit};
