//! Guest RAM: one mapping registered as KVM memory slot 0, and the host's view of it.
//!
//! A template VM's RAM is a shared mapping of a memfd, so that once the guest is ready the
//! memfd *is* its snapshot. Every other VM maps a snapshot's memfd privately: pages are
//! shared copy-on-write until the guest (or a device) writes them. Writes are tracked by
//! KVM's dirty log (guest) and vm-memory's bitmap (devices) where a VM needs to undo them.

use std::fs::File;
use std::io;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::{MmapRegionBuilder, MmapRegionError};
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryError, GuestMemoryMmap,
    GuestMemoryRegion, GuestRegionCollectionError, GuestRegionMmap,
};

/// Why guest memory could not be set up or looked at.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    #[error("memfd_create: {0}")]
    Memfd(#[source] io::Error),
    #[error("sizing guest memory: {0}")]
    SetLen(#[source] io::Error),
    #[error("mapping guest memory: {0}")]
    Map(#[source] MmapRegionError),
    #[error("mapping guest memory: the mapping does not fit the guest address space")]
    Region,
    #[error("mapping guest memory: {0}")]
    Regions(#[source] GuestRegionCollectionError),
    #[error("no guest memory")]
    NoRegion,
    #[error("finding guest memory in the host: {0}")]
    HostAddress(#[source] GuestMemoryError),
    #[error("KVM_SET_USER_MEMORY_REGION: {0}")]
    Register(#[source] kvm_ioctls::Error),
    #[error("SEEK_HOLE: {0}")]
    SeekHole(#[source] io::Error),
}

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

/// A new, empty memfd of `size` bytes.
pub fn memfd(size: u64) -> Result<Arc<File>, MemoryError> {
    // SAFETY: the name is a valid C string; the returned fd is checked and then owned.
    let fd = unsafe { libc::memfd_create(c"ember-guest".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(MemoryError::Memfd(io::Error::last_os_error()));
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(size).map_err(MemoryError::SetLen)?;
    Ok(Arc::new(file))
}

/// Maps `size` bytes of guest RAM (a size the VM's configuration allows) at guest
/// physical 0 and hands them to KVM.
pub fn create(
    vm: &VmFd,
    size: u64,
    backing: &Backing,
    log_dirty: bool,
) -> Result<GuestMemory, MemoryError> {
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
    let region = builder.build().map_err(MemoryError::Map)?;
    let region = GuestRegionMmap::new(region, GuestAddress(0)).ok_or(MemoryError::Region)?;
    let mem = GuestMemoryMmap::from_regions(vec![region]).map_err(MemoryError::Regions)?;
    register(vm, &mem, log_dirty)?;
    Ok(mem)
}

/// Hands `mem` to KVM as slot 0, or changes whether KVM logs the guest's writes to it.
/// Turning logging on in a running VM write-protects its pages, so each page's next write
/// faults once (and is logged).
pub fn register(vm: &VmFd, mem: &GuestMemory, log_dirty: bool) -> Result<(), MemoryError> {
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: size(mem)? as u64,
        userspace_addr: host_base(mem)? as u64,
        flags: if log_dirty {
            KVM_MEM_LOG_DIRTY_PAGES
        } else {
            0
        },
    };
    // SAFETY: the region is a live mapping of `memory_size` bytes owned by `mem`, which the vCPU
    // thread keeps alive until after the VM file descriptor is closed.
    unsafe { vm.set_user_memory_region(region) }.map_err(MemoryError::Register)
}

/// Whether a page holds only zeros. Compared with a page of zeros, because `memcmp` is
/// fast in every build (the tests' unoptimised builds scan megabytes with this).
pub fn is_zero(bytes: &[u8]) -> bool {
    static ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    bytes.chunks(PAGE_SIZE).all(|c| c == &ZEROS[..c.len()])
}

/// Where guest memory starts in the host's address space.
pub fn host_base(mem: &GuestMemory) -> Result<*mut u8, MemoryError> {
    mem.get_host_address(GuestAddress(0))
        .map_err(MemoryError::HostAddress)
}

/// Bytes of guest memory.
pub fn size(mem: &GuestMemory) -> Result<usize, MemoryError> {
    let region = mem.iter().next().ok_or(MemoryError::NoRegion)?;
    Ok(region.len() as usize)
}

/// The pages of `file` that hold data (not holes), in ascending order.
pub fn data_pages(file: &File, size: usize) -> Result<Vec<usize>, MemoryError> {
    let fd = file.as_raw_fd();
    let mut pages = Vec::new();
    let mut at: libc::off_t = 0;
    while (at as usize) < size {
        // SAFETY: lseek on a file we own; errors are checked.
        let start = unsafe { libc::lseek(fd, at, libc::SEEK_DATA) };
        if start < 0 {
            break; // ENXIO: no data after `at`
        }
        // SAFETY: as above.
        let end = unsafe { libc::lseek(fd, start, libc::SEEK_HOLE) };
        if end < 0 {
            return Err(MemoryError::SeekHole(io::Error::last_os_error()));
        }
        let end = (end as usize).min(size);
        pages.extend(start as usize / PAGE_SIZE..end.div_ceil(PAGE_SIZE));
        at = end as libc::off_t;
    }
    Ok(pages)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn data_pages_skip_holes() {
        let file = memfd(16 * PAGE_SIZE as u64).unwrap();
        file.write_all_at(b"x", 3 * PAGE_SIZE as u64 + 5).unwrap();
        file.write_all_at(&[1u8; PAGE_SIZE * 2], 10 * PAGE_SIZE as u64)
            .unwrap();
        assert_eq!(data_pages(&file, 16 * PAGE_SIZE).unwrap(), vec![3, 10, 11]);
    }

    #[test]
    fn zero_pages_are_recognised() {
        let mut page = vec![0u8; PAGE_SIZE];
        assert!(is_zero(&page));
        page[PAGE_SIZE - 1] = 1;
        assert!(!is_zero(&page));
    }
}
