//! The fuzz targets, one module per input format.

mod fleet_messages;
mod frames;
mod guest_payloads;
mod module;
mod package;
mod sigv4;
mod vsock_device;

use crate::Target;

/// Every target, in the order campaigns run them.
pub const ALL: &[Target] = &[
    frames::TARGET,
    guest_payloads::TARGET,
    module::TARGET,
    package::TARGET,
    sigv4::PARSE,
    sigv4::ROUND_TRIP,
    fleet_messages::TARGET,
    vsock_device::TARGET,
];

/// The target called `name`.
pub fn by_name(name: &str) -> Option<&'static Target> {
    ALL.iter().find(|t| t.name == name)
}
