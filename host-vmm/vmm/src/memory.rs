//! Guest RAM: one mapping registered as KVM memory slot 0.
//!
//! A template VM's RAM is a shared mapping of a memfd, so that once the guest is ready the
//! memfd *is* its snapshot. Every other VM maps a snapshot's memfd privately: pages are
//! shared copy-on-write until the guest (or a device) writes them. Writes are tracked by
//! KVM's dirty log (guest) and vm-memory's bitmap (devices) where a VM needs to undo them.

use std::fs::File;
use std::num::NonZeroUsize;
use std::os::fd::{AsRawFd, FromRawFd};
use std::sync::Arc;

use ember_wire::layout::{MAX_MEMORY, MIN_MEMORY};
use kvm_bindings::{kvm_userspace_memory_region, KVM_MEM_LOG_DIRTY_PAGES};
use kvm_ioctls::VmFd;
use vm_memory::bitmap::AtomicBitmap;
use vm_memory::mmap::MmapRegionBuilder;
use vm_memory::{
    FileOffset, GuestAddress, GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap,
};

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
    register(vm, &mem, log_dirty)?;
    Ok(mem)
}

/// Hands `mem` to KVM as slot 0, or changes whether KVM logs the guest's writes to it.
/// Turning logging on in a running VM write-protects its pages, so each page's next write
/// faults once (and is logged).
pub fn register(vm: &VmFd, mem: &GuestMemory, log_dirty: bool) -> Result<(), VmError> {
    let setup = |e: &dyn std::fmt::Display| VmError::Setup(format!("mapping guest memory: {e}"));
    let size = mem.iter().next().ok_or_else(|| setup(&"no region"))?.len();
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
        .map_err(|e| VmError::Kvm(format!("KVM_SET_USER_MEMORY_REGION: {e}")))
}

/// Whether a page holds only zeros. Compared with a page of zeros, because `memcmp` is
/// fast in every build (the tests' unoptimised builds scan megabytes with this).
pub fn is_zero(bytes: &[u8]) -> bool {
    static ZEROS: [u8; PAGE_SIZE] = [0; PAGE_SIZE];
    bytes.chunks(PAGE_SIZE).all(|c| c == &ZEROS[..c.len()])
}

/// Where guest memory starts in the host's address space.
pub fn host_base(mem: &GuestMemory) -> Result<*mut u8, String> {
    mem.get_host_address(GuestAddress(0))
        .map_err(|e| e.to_string())
}

/// The pages of `file` that hold data (not holes), in ascending order.
pub fn data_pages(file: &File, size: usize) -> Result<Vec<usize>, String> {
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
            return Err(format!("SEEK_HOLE: {}", std::io::Error::last_os_error()));
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
