//! Snapshots of a ready guest: memory in a memfd, the vCPU registers and the vsock device,
//! taken while the guest is parked with no connection open. New VMs start from a snapshot
//! with their memory copy-on-write over it, which skips booting guest-init.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Its guest memory size in bytes.
    pub fn mem_size(&self) -> u64 {
        self.mem_size
    }

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

/// A snapshot as it crosses between processes: everything but its memory, which goes as
/// descriptors (its own memfd first, then its base's, and so on).
#[derive(Clone, Serialize, Deserialize)]
pub struct SnapshotState {
    mem_size: u64,
    guest_cid: u64,
    vcpu: VcpuState,
    device: TransportState,
    image: LoadedImage,
    base: Option<(Box<SnapshotState>, Vec<usize>)>,
}

impl std::fmt::Debug for SnapshotState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SnapshotState")
            .field("mem_size", &self.mem_size)
            .field("based", &self.base.is_some())
            .finish_non_exhaustive()
    }
}

impl Snapshot {
    /// This snapshot's state and its memfds, to send to another process.
    pub fn export(&self) -> (SnapshotState, Vec<Arc<File>>) {
        let mut fds = vec![self.memory.clone()];
        let base = self.base.as_ref().map(|(base, differ)| {
            let (state, base_fds) = base.export();
            fds.extend(base_fds);
            (Box::new(state), differ.clone())
        });
        let state = SnapshotState {
            mem_size: self.mem_size,
            guest_cid: self.guest_cid,
            vcpu: self.vcpu.clone(),
            device: self.device.clone(),
            image: self.image,
            base,
        };
        (state, fds)
    }

    /// A snapshot another process exported. It is checked as far as this process relies on
    /// it: each memfd is at least the memory size, the bases have the same size and every
    /// differing page lies inside the memory (registers and queues are checked when a VM
    /// is restored from it).
    pub fn import(state: SnapshotState, fds: Vec<OwnedFd>) -> Result<Arc<Snapshot>, VmError> {
        let mut fds = fds.into_iter();
        let snapshot = Self::import_one(state, &mut fds)?;
        if fds.next().is_some() {
            return Err(VmError::Import("more memfds than snapshots".into()));
        }
        Ok(snapshot)
    }

    /// This snapshot, with `template` as its base when its base is the same memory (an
    /// import makes new handles for it): a spare VM warmed from `template` in this process
    /// can then become it.
    pub fn based_on(self: &Arc<Snapshot>, template: &Arc<Snapshot>) -> Arc<Snapshot> {
        use std::os::unix::fs::MetadataExt;
        let same = |a: &File, b: &File| match (a.metadata(), b.metadata()) {
            (Ok(a), Ok(b)) => (a.dev(), a.ino()) == (b.dev(), b.ino()),
            _ => false,
        };
        match &self.base {
            Some((base, differ)) if same(&base.memory, &template.memory) => Arc::new(Snapshot {
                memory: self.memory.clone(),
                mem_size: self.mem_size,
                guest_cid: self.guest_cid,
                vcpu: self.vcpu.clone(),
                device: self.device.clone(),
                image: self.image,
                base: Some((template.clone(), differ.clone())),
            }),
            _ => self.clone(),
        }
    }

    fn import_one(
        state: SnapshotState,
        fds: &mut impl Iterator<Item = OwnedFd>,
    ) -> Result<Arc<Snapshot>, VmError> {
        let bad = |what: &str| VmError::Import(what.to_owned());
        let memory = File::from(fds.next().ok_or_else(|| bad("a memfd is missing"))?);
        let len = memory.metadata().map_err(|e| bad(&e.to_string()))?.len();
        if len < state.mem_size || state.mem_size == 0 {
            return Err(bad("a memfd is smaller than the memory"));
        }
        let pages = (state.mem_size / memory::PAGE_SIZE as u64) as usize;
        let base = match state.base {
            None => None,
            Some((base, differ)) => {
                let base = Self::import_one(*base, fds)?;
                if base.mem_size != state.mem_size {
                    return Err(bad("a base of another size"));
                }
                if differ.iter().any(|page| *page >= pages) {
                    return Err(bad("a page outside the memory"));
                }
                Some((base, differ))
            }
        };
        Ok(Arc::new(Snapshot {
            memory: Arc::new(memory),
            mem_size: state.mem_size,
            guest_cid: state.guest_cid,
            vcpu: state.vcpu,
            device: state.device,
            image: state.image,
            base,
        }))
    }
}
