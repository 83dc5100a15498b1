//! Boots ember's worker OS image under QEMU and drives it: the harness the tests in
//! `tests/` share. [`tools`] finds or installs QEMU and OVMF; [`image`] builds the image
//! with `ember-image`; [`qemu`] runs a machine and reads its serial console.

pub mod image;
pub mod qemu;
pub mod tools;
