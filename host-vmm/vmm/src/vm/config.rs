//! How to build a VM, and which configurations are refused.

use std::path::PathBuf;

use ember_wire::layout::{MAX_MEMORY, MIN_MEMORY};

/// How to build a VM.
#[derive(Clone, Debug)]
pub struct VmConfig {
    /// Guest RAM in MiB (a multiple of 2, at least 8).
    pub mem_mib: u32,
    /// The guest's vsock CID (3 or more).
    pub guest_cid: u64,
    /// Serve the hybrid vsock Unix socket at this path.
    pub uds_path: Option<PathBuf>,
    /// Let the guest accept test-only frames (deliberate faults and hangs).
    pub test_frames: bool,
    /// Ask the guest to log its boot steps.
    pub verbose: bool,
    /// Track which pages the guest and devices write (needed to reset a VM's memory).
    pub track_dirty: bool,
}

impl Default for VmConfig {
    fn default() -> Self {
        VmConfig {
            mem_mib: 16,
            guest_cid: 3,
            uds_path: None,
            test_frames: false,
            verbose: false,
            track_dirty: false,
        }
    }
}

/// A configuration no VM can be built with.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("guest CID must be between 3 and {max}, got {0}", max = u32::MAX)]
    GuestCid(u64),
    #[error(
        "guest memory must be a multiple of 2 MiB between {min} and {max} MiB, got {0} bytes",
        min = MIN_MEMORY >> 20,
        max = MAX_MEMORY >> 20
    )]
    MemorySize(u64),
    #[error("{mem_mib} MiB of guest memory cannot hold the {image_kib} KiB guest image, a heap and a stack")]
    TooSmall { mem_mib: u64, image_kib: u64 },
}

impl VmConfig {
    /// Guest RAM in bytes, if the size is one a VM can have.
    pub fn mem_size(&self) -> Result<u64, ConfigError> {
        let size = u64::from(self.mem_mib) << 20;
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&size) || !size.is_multiple_of(2 << 20) {
            return Err(ConfigError::MemorySize(size));
        }
        Ok(size)
    }

    /// Checks the guest CID: 0 to 2 are reserved, and virtio-vsock CIDs are 32-bit.
    pub fn check_guest_cid(&self) -> Result<(), ConfigError> {
        if self.guest_cid < 3 || self.guest_cid > u64::from(u32::MAX) {
            return Err(ConfigError::GuestCid(self.guest_cid));
        }
        Ok(())
    }
}
