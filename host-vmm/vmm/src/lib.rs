//! ember's VMM: micro-VMs on KVM that enter the `no_std` guest-init directly in ring 3 and
//! talk to it over virtio-vsock. See `docs/microvm.md` for the design.

pub mod client;
pub mod devices;
pub mod floor;
pub mod function;
pub mod guest_image;
pub mod kvm;
pub mod vm;

pub use client::{ClientError, GuestClient};
pub use devices::vsock::stream::VsockStream;
pub use vm::{GuestFault, Vm, VmConfig, VmError, VmExit};
