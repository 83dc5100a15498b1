//! The guest-init ELF, built for `x86_64-unknown-none` by this crate's build script.

pub const ELF: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/guest-init.elf"));
