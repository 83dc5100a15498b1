//! The contract between `host-vmm` and `guest-init`.
//!
//! Both sides compile this crate, so the guest layout, the boot-info block and the frame
//! protocol cannot drift apart. It is `no_std` (the guest has no `std`) and every decoder
//! treats its input as hostile: lengths and fields are checked, never trusted.
#![no_std]

extern crate alloc;

pub mod boot;
pub mod frame;
pub mod function;
pub mod hostile;
pub mod info;
pub mod layout;
#[cfg(feature = "inspect")]
pub mod module;
pub mod virtio;
