//! Guest RAM: one anonymous, lazily populated mapping registered as KVM memory slot 0.

use ember_wire::layout::{MAX_MEMORY, MIN_MEMORY};
use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryMmap};

use super::VmError;

/// Maps `size` bytes of guest RAM at guest physical 0 and hands them to KVM.
pub fn create(vm: &VmFd, size: u64) -> Result<GuestMemoryMmap, VmError> {
    if !(MIN_MEMORY..=MAX_MEMORY).contains(&size) || !size.is_multiple_of(2 << 20) {
        return Err(VmError::Config(format!(
            "guest memory must be a multiple of 2 MiB between {} and {} MiB, got {size} bytes",
            MIN_MEMORY >> 20,
            MAX_MEMORY >> 20
        )));
    }
    let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), size as usize)])
        .map_err(|e| VmError::Setup(format!("mapping guest memory: {e}")))?;
    let host = mem
        .get_host_address(GuestAddress(0))
        .map_err(|e| VmError::Setup(format!("guest memory address: {e}")))?;
    let region = kvm_userspace_memory_region {
        slot: 0,
        guest_phys_addr: 0,
        memory_size: size,
        userspace_addr: host as u64,
        flags: 0,
    };
    // SAFETY: the region is a live mapping of `size` bytes owned by `mem`, which the vCPU
    // thread keeps alive until after the VM file descriptor is closed.
    unsafe { vm.set_user_memory_region(region) }
        .map_err(|e| VmError::Kvm(format!("KVM_SET_USER_MEMORY_REGION: {e}")))?;
    Ok(mem)
}
