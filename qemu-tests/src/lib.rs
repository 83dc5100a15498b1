//! Boots ember's worker OS image under QEMU and drives it: the harness the tests in
//! `tests/` share. [`tools`] finds or installs QEMU, OVMF and `vhost-device-vsock`;
//! [`image`] builds the image with `ember-image`; [`qemu`] runs a machine and reads its
//! serial console; [`vsock`] gives it a vsock device whose host side is a Unix socket.

pub mod image;
pub mod qemu;
pub mod tools;
pub mod vsock;
