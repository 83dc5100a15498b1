//! Guest RAM: one mapping registered as KVM memory slot 0.
//!
//! A template VM's RAM is a shared mapping of a memfd, so that once the guest is ready the
//! memfd *is* its snapshot. Every other VM maps a snapshot's memfd privately: pages are
//! shared copy-on-write until the guest (or a device) writes them. Writes are tracked by
//! KVM's dirty log (guest) and vm-memory's bitmap (devices) where a VM needs to undo them.

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::FromRawFd;
use std::sync::Arc;

use ember_wire::layout::{MAX_MEMORY, MIN_MEMORY};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestRegionMmap};

use super::VmError;

/// Guest memory with a dirty bitmap for writes made by the VMM's devices.
pub type GuestMemory = GuestMemoryMmap<AtomicBitmap>;

pub const PAGE_SIZE: usize = 4096;

/// How a VM's RAM is backed.
pub enum Backing {
    /// Fresh anonymous memory (a VM booted from scratch).
    Anonymous,
    /// A new memfd mapped shared: this VM's memory becomes a snapshot.
    Template(Arc<File>),
    /// Copy-on-write over a snapshot's memfd.
    CopyOnWrite(Arc<File>),
}

pub fn check_size(size: u64) -> Result<(), VmError> {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&size) || !size.is_multiple_of(2 << 20) {
        return Err(VmError::Config(format!(
            "guest memory must be a multiple of 2 MiB between {} and {} MiB, got {size} bytes",
            MIN_MEMORY >> 20,
            MAX_MEMORY >> 20
        )));
    }
    Ok(())
}

/// A new, empty memfd of `size` bytes.
pub fn memfd(size: u64) -> Result<Arc<File>, VmError> {
    // SAFETY: the name is a valid C string; the returned fd is checked and then owned.
    let fd = unsafe { libc::memfd_create(c"ember-guest".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(VmError::Setup(format!(
            "memfd_create: {}",
            std::io::Error::last_os_error()
        )));
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size)
        .map_err(|e| VmError::Setup(format!("sizing guest memory: {e}")))?;
    Ok(Arc::new(file))
}

/// Maps `size` bytes of guest RAM at guest physical 0 and hands them to KVM.
pub fn create(
    vm: &VmFd,
    size: u64,
    backing: &Backing,
    log_dirty: bool,
) -> Result<GuestMemory, VmError> {
    check_size(size)?;
    let setup = |e: &dyn std::fmt::Display| VmError::Setup(format!("mapping guest memory: {e}"));
    let bitmap = AtomicBitmap::new(size as usize, NonZeroUsize::new(PAGE_SIZE).unwrap());
    let builder = MmapRegionBuilder::new_with_bitmap(size as usize, bitmap)
        .with_mmap_prot(libc::PROT_READ | libc::PROT_WRITE);
    let builder = match backing {
        Backing::Anonymous => {
            builder.with_mmap_flags(libc::MAP_ANONYMOUS | libc::MAP_PRIVATE | libc::MAP_NORESERVE)
        }
        Backing::Template(file) => builder
            .with_file_offset(FileOffset::from_arc(file.clone(), 0))
            .with_mmap_flags(libc::MAP_SHARED | libc::MAP_NORESERVE),
        Backing::CopyOnWrite(file) => builder
            .with_file_offset(FileOffset::from_arc(file.clone(), 0))
            .with_mmap_flags(libc::MAP_PRIVATE | libc::MAP_NORESERVE),
    };
    let region = builder.build().map_err(|e| setup(&e))?;
    let region =
        GuestRegionMmap::new(region, GuestAddress(0)).ok_or_else(|| setup(&"bad region"))?;
    let mem = GuestMemoryMmap::from_regions(vec![region]).map_err(|e| setup(&e))?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| setup(&e))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: size,
        userspace_addr: host as u64,
        flags: if log_dirty {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        },
    };
    // SAFETY: the region is a live mapping of `size` bytes owned by `mem`, which the vCPU
    // thread keeps alive until after the VM file descriptor is closed.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| VmError::Kvm(format!("KVM_SET_USER_MEMORY_REGION: {e}")))?;
    Ok(mem)
}
