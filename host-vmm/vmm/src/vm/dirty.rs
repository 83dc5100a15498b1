//! Which guest pages changed, and what to do with them: KVM's dirty log says which pages
//! the guest wrote, vm-memory's bitmap which pages the devices wrote.
//!
//! Resetting a VM restored from a snapshot copies the snapshot's contents back over exactly
//! the pages written since. Exporting a VM writes the snapshot's data pages and the VM's
//! written pages, as they are now, into a new memfd: a snapshot of this VM.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use kvm_ioctls::VmFd;
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::memory::{self, data_pages, host_base, is_zero, GuestMemory, MemoryError, PAGE_SIZE};

/// Why the written pages could not be found, put back or exported.
#[derive(Debug, thiserror::Error)]
pub enum DirtyError {
    #[error("{0}")]
    Memory(#[from] MemoryError),
    #[error("KVM_GET_DIRTY_LOG (was the VM started with track_dirty?): {0}")]
    DirtyLog(#[source] kvm_ioctls::Error),
    #[error("reading the snapshot: {0}")]
    ReadSnapshot(#[source] io::Error),
    #[error("reading the base snapshot: {0}")]
    ReadBase(#[source] io::Error),
    #[error("writing the snapshot: {0}")]
    WriteSnapshot(#[source] io::Error),
}

/// Pages written since the last call, by the guest or by a device; clears both logs.
pub fn take_dirty_pages(vm: &VmFd, mem: &GuestMemory) -> Result<Vec<usize>, DirtyError> {
    let region = mem.iter().next().ok_or(MemoryError::NoRegion)?;
    let size = region.len() as usize;
    let guest = vm.get_dirty_log(0, size).map_err(DirtyError::DirtyLog)?;
    let devices = std::ops::Deref::deref(region).bitmap().get_and_reset();
    let mut dirty = Vec::new();
    for (word, (g, d)) in guest
        .iter()
        .zip(devices.iter().chain(std::iter::repeat(&0)))
        .enumerate()
    {
        let mut bits = g | d;
        while bits != 0 {
            dirty.push(word * 64 + bits.trailing_zeros() as usize);
            bits &= bits - 1;
        }
    }
    dirty.retain(|&p| p < size / PAGE_SIZE);
    Ok(dirty)
}

/// Copies the snapshot's contents of `pages` (sorted) back over them. Copying keeps the
/// VM's private pages and their mappings in place: dropping them instead would make the
/// next invocation pay a host fault and a shadow-paging fault for each of them again.
pub fn restore_pages(
    mem: &GuestMemory,
    snapshot: &File,
    pages: &[usize],
) -> Result<(), DirtyError> {
    let host = host_base(mem)?;
    for run in runs(pages) {
        // SAFETY: the run lies inside guest memory and the vCPU is paused, so nothing else
        // reads or writes it while it is overwritten.
        let bytes = unsafe {
            std::slice::from_raw_parts_mut(host.add(run.start * PAGE_SIZE), run.len() * PAGE_SIZE)
        };
        snapshot
            .read_exact_at(bytes, (run.start * PAGE_SIZE) as u64)
            .map_err(DirtyError::ReadSnapshot)?;
    }
    Ok(())
}

/// Writes the current contents of every page that is data in `base` or in `written` (in
/// ascending order) to `out` (sized like guest memory), except pages of zeros: those stay
/// holes, which read as zeros. Returns the pages of `written` that may now differ from
/// `base`: all but those that are zeros in both.
pub fn export(
    mem: &GuestMemory,
    base: &File,
    written: &[usize],
    out: &File,
) -> Result<Vec<usize>, DirtyError> {
    let host = host_base(mem)?;
    let size = memory::size(mem)?;
    // SAFETY: every page number below comes from guest memory's size or the dirty log.
    let page = |p: usize| unsafe { std::slice::from_raw_parts(host.add(p * PAGE_SIZE), PAGE_SIZE) };
    let mut pages = data_pages(base, size)?;
    pages.extend_from_slice(written);
    pages.sort_unstable();
    pages.dedup();
    pages.retain(|&p| !is_zero(page(p)));
    let mut differ = Vec::with_capacity(written.len());
    let mut was = vec![0u8; PAGE_SIZE];
    for &p in written {
        if pages.binary_search(&p).is_err() {
            base.read_exact_at(&mut was, (p * PAGE_SIZE) as u64)
                .map_err(DirtyError::ReadBase)?;
            if is_zero(&was) {
                continue;
            }
        }
        differ.push(p);
    }
    for run in runs(&pages) {
        // SAFETY: the run lies inside guest memory and the vCPU is paused.
        let bytes = unsafe {
            std::slice::from_raw_parts(host.add(run.start * PAGE_SIZE), run.len() * PAGE_SIZE)
        };
        out.write_all_at(bytes, (run.start * PAGE_SIZE) as u64)
            .map_err(DirtyError::WriteSnapshot)?;
    }
    Ok(differ)
}

/// Consecutive page numbers as ranges.
fn runs(pages: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut out: Vec<std::ops::Range<usize>> = Vec::new();
    for &p in pages {
        match out.last_mut() {
            Some(run) if run.end == p => run.end += 1,
            _ => out.push(p..p + 1),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_consecutive_pages() {
        assert_eq!(runs(&[1, 2, 3, 7, 9, 10]), vec![1..4, 7..8, 9..11]);
        assert!(runs(&[]).is_empty());
    }
}
