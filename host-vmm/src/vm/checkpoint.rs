//! Resetting a VM's memory to an earlier point by undoing only the pages written since:
//! KVM's dirty log says which pages the guest wrote, vm-memory's bitmap which pages the
//! devices wrote. Pages first written after the VM started from its snapshot are dropped
//! (`MADV_DONTNEED` brings the snapshot's copy back); pages that already differed at the
//! checkpoint are copied back from the checkpoint.

use std::collections::HashMap;

use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion};

use super::memory::{GuestMemory, PAGE_SIZE};
use super::vcpu::Paused;

pub struct Checkpoint {
    pub state: Paused,
    /// Contents at the checkpoint of every page written since the snapshot.
    saved: HashMap<usize, Box<[u8]>>,
}

impl Checkpoint {
    pub fn take(vm: &VmFd, mem: &GuestMemory, state: Paused) -> Result<Checkpoint, String> {
        let host = host_base(mem)?;
        let saved = dirty_pages(vm, mem)?
            .into_iter()
            .map(|page| {
                // SAFETY: `page` is inside guest memory (the bitmaps cover exactly it) and the
                // vCPU is paused, so nothing writes it while we copy.
                let bytes =
                    unsafe { std::slice::from_raw_parts(host.add(page * PAGE_SIZE), PAGE_SIZE) };
                (page, bytes.into())
            })
            .collect();
        Ok(Checkpoint { state, saved })
    }

    /// Undoes every write since the checkpoint.
    pub fn restore_memory(&self, vm: &VmFd, mem: &GuestMemory) -> Result<(), String> {
        let host = host_base(mem)?;
        for page in dirty_pages(vm, mem)? {
            // SAFETY: as in `take`; the page is ours and nothing else touches it now.
            unsafe {
                let dst = host.add(page * PAGE_SIZE);
                match self.saved.get(&page) {
                    Some(bytes) => std::ptr::copy_nonoverlapping(bytes.as_ptr(), dst, PAGE_SIZE),
                    None => {
                        if libc::madvise(dst.cast(), PAGE_SIZE, libc::MADV_DONTNEED) != 0 {
                            return Err(format!("madvise: {}", std::io::Error::last_os_error()));
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

fn host_base(mem: &GuestMemory) -> Result<*mut u8, String> {
    mem.get_host_address(GuestAddress(0))
        .map_err(|e| e.to_string())
}

/// Pages written since the last call, by the guest or by a device; clears both logs.
fn dirty_pages(vm: &VmFd, mem: &GuestMemory) -> Result<Vec<usize>, String> {
    let region = mem.iter().next().ok_or("no guest memory")?;
    let size = region.len() as usize;
    let guest = vm
        .get_dirty_log(0, size)
        .map_err(|e| format!("KVM_GET_DIRTY_LOG (was the VM started with track_dirty?): {e}"))?;
    let devices = std::ops::Deref::deref(region).bitmap().get_and_reset();
    let mut dirty = Vec::new();
    for (word, (g, d)) in guest
        .iter()
        .zip(devices.iter().chain(std::iter::repeat(&0)))
        .enumerate()
    {
        let mut bits = g | d;
        while bits != 0 {
            let bit = bits.trailing_zeros() as usize;
            dirty.push(word * 64 + bit);
            bits &= bits - 1;
        }
    }
    dirty.retain(|&p| p < size / PAGE_SIZE);
    Ok(dirty)
}
