//! Spare VMs: restored from a memory-size template and warmed ahead of need, so that a new
//! environment pays neither for creating a VM nor for the first touch of the pages its
//! first invocation uses (under PVM each first touch of a page in a new VM is a
//! shadow-paging fault, ≈ 13 µs).
//!
//! Warming runs guest-init's page-touch routine, which leaves memory byte for byte as in
//! the template: a spare never ran anything but that, and no function's code. The pages
//! it writes become the VM's own, so writing a snapshot's contents into them later changes
//! no host mapping and KVM's mappings of them stay valid (its MMU notifiers fire only when
//! a host page-table entry changes, not when a page's contents do).

use std::sync::Arc;

use ember_wire::layout::{IMAGE_BASE, STACK_GUARD, STACK_SIZE};

use super::command::{Command, Touch};
use super::{Snapshot, Vm, VmConfig, VmError};

/// A warmed VM of one template, paused before its first instruction and bound to nothing.
/// It is consumed by [`SpareVm::into_vm`], so it can back at most one environment.
pub struct SpareVm {
    vm: Vm,
}

impl SpareVm {
    /// Restores `template` into a new VM and has the guest touch its image (read), its
    /// writable data, the first `heap_warm` bytes of its heap and its stack (written).
    pub fn new(template: &Arc<Snapshot>, heap_warm: u64) -> Result<SpareVm, VmError> {
        let vm = Vm::restore_paused(template, &VmConfig::default())?;
        let image = &template.image;
        let mem = template.mem_size;
        let heap_end = mem - STACK_SIZE - STACK_GUARD;
        let ranges = vec![
            Touch {
                pages: IMAGE_BASE..image.data_start,
                write: false,
            },
            Touch {
                pages: image.data_start..image.end.saturating_add(heap_warm).min(heap_end),
                write: true,
            },
            Touch {
                pages: mem - STACK_SIZE..mem,
                write: true,
            },
        ];
        vm.command(Command::Touch {
            routine: image.touch_pages,
            ranges,
        })?;
        Ok(SpareVm { vm })
    }

    /// Turns the spare into a running VM in the state of `snapshot`, which must have been
    /// taken from this spare's template: only the pages where the two differ (and the page
    /// tables) are copied in. With `track_dirty`, KVM logs the guest's writes from now on
    /// (needed for resets), at the price of a write fault on each page's next write.
    pub fn into_vm(self, snapshot: &Arc<Snapshot>, track_dirty: bool) -> Result<Vm, VmError> {
        self.vm.command(Command::Become {
            snapshot: snapshot.clone(),
            log_dirty: track_dirty,
        })?;
        self.vm.resume();
        Ok(self.vm)
    }
}
