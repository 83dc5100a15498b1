//! Snapshots of a ready guest: memory in a memfd, the vCPU registers and the vsock device,
//! taken while the guest is parked with no connection open. New VMs start from a snapshot
//! with their memory copy-on-write over it, which skips booting guest-init.

use std::fs::File;
use std::sync::Arc;
use std::time::Duration;

use super::command::Command;
use super::control::Paused;
use super::loader::LoadedImage;
use super::registers::VcpuState;
use super::{Pause, Vm, VmConfig, VmError};
use crate::devices::virtio_mmio::TransportState;
use crate::memory::{self, Backing};

/// How long a freshly booted guest may take to become idle.
const READY_TIMEOUT: Duration = Duration::from_secs(10);

pub struct Snapshot {
    pub(super) memory: Arc<File>,
    pub(super) mem_size: u64,
    pub(super) guest_cid: u64,
    pub(super) vcpu: VcpuState,
    pub(super) device: TransportState,
    /// Where guest-init's image lies, for warming spare VMs.
    pub(super) image: LoadedImage,
    /// The snapshot this one was taken from (restored, run, paused), and the pages where
    /// the two may differ (written in between, and not zeros in both).
    pub(super) base: Option<(Arc<Snapshot>, Vec<usize>)>,
}

impl Snapshot {
    /// Boots guest-init as `config` says, waits until it is ready and idle, and keeps it.
    pub fn of_fresh_guest(config: &VmConfig) -> Result<Arc<Snapshot>, VmError> {
        let mem_size = config.mem_size()?;
        let file = memory::memfd(mem_size)?;
        let template = VmConfig {
            uds_path: None,
            track_dirty: false,
            ..config.clone()
        };
        let (vm, image) = Vm::boot_backed(&template, &Backing::Template(file.clone()))?;
        let paused = vm.pause(Pause::Idle, READY_TIMEOUT)?;
        vm.stop();
        Ok(Arc::new(Snapshot {
            memory: file,
            mem_size,
            guest_cid: config.guest_cid,
            vcpu: paused.vcpu,
            device: paused.device,
            image,
            base: None,
        }))
    }

    /// A snapshot of `vm`, which was restored from `base` with `track_dirty` and is paused
    /// (its state is `paused`): the base's memory plus every page the VM wrote since.
    pub fn of_paused(
        vm: &Vm,
        base: &Arc<Snapshot>,
        paused: Paused,
    ) -> Result<Arc<Snapshot>, VmError> {
        let file = memory::memfd(base.mem_size)?;
        let differ = vm.command(Command::Export(file.clone()))?;
        Ok(Arc::new(Snapshot {
            memory: file,
            mem_size: base.mem_size,
            guest_cid: base.guest_cid,
            vcpu: paused.vcpu,
            device: paused.device,
            image: base.image,
            base: Some((base.clone(), differ)),
        }))
    }
}
