//! What the host can ask of a paused vCPU thread, which owns the vCPU, guest memory and
//! devices: export the VM as a snapshot, reset it to its snapshot, warm it, or turn a
//! warmed spare into a VM of another snapshot of its template.

use std::fs::File;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use ember_wire::layout::{DOORBELL_KICK_PORT, PAGE_TABLES};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};

use super::control::Paused;
use super::cpu::PAGE_TABLES_END;
use super::dirty::{self, DirtyError};
use super::registers::{self, RegisterError};
use super::snapshot::Snapshot;
use super::warm::{self, WarmError};
use crate::devices::vsock::VsockDevice;
use crate::memory::{self, GuestMemory, MemoryError, PAGE_SIZE};

#[derive(Clone)]
pub enum Command {
    /// Write this VM's memory into the (empty, sized) memfd: the memory of a new snapshot.
    Export(Arc<File>),
    /// Put memory, vCPU and device back as they are in the snapshot the VM was restored
    /// from (only the pages written since are touched).
    Reset(Arc<Snapshot>),
    /// Before the guest's first instruction: make the ranges to be written the VM's own,
    /// run the guest's page-touch routine (at `routine`) over each range, then put the
    /// registers back. KVM then maps those pages; memory is left as it was.
    Touch { routine: u64, ranges: Vec<Touch> },
    /// Take on the state of `snapshot`, which was taken from the template this VM was
    /// restored from, in a VM whose memory still equals that template (it ran nothing but
    /// the touch routine). With `log_dirty`, KVM logs writes from then on (for resets).
    Become {
        snapshot: Arc<Snapshot>,
        log_dirty: bool,
    },
}

/// Guest pages to touch: read them, or also write them (so they are the VM's own).
#[derive(Clone, Debug)]
pub struct Touch {
    pub pages: Range<u64>,
    pub write: bool,
}

/// Why a command was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the VM is not paused")]
    NotPaused,
    #[error("the VM ended")]
    Ended,
    /// The command (`exported`, `warmed`) needs the snapshot the VM was restored from.
    #[error("only a VM restored from a snapshot can be {0}")]
    NotRestored(&'static str),
    #[error("only a VM whose guest has not run yet can be warmed")]
    AlreadyRan,
    #[error("the snapshot was not taken from a template")]
    NotFromTemplate,
    #[error("the snapshot was not taken from this VM's template")]
    OtherTemplate,
    #[error("{0}")]
    Pages(#[from] DirtyError),
    #[error("{0}")]
    Warm(#[from] WarmError),
    #[error("{0}")]
    Registers(#[from] RegisterError),
    #[error("{0}")]
    Memory(#[from] MemoryError),
    /// The debug rendering of the exit (it borrows the vCPU, so it is not kept).
    #[error("touching guest pages: unexpected exit {0}")]
    TouchExit(String),
    #[error("stopped while touching guest pages")]
    Stopped,
    #[error("KVM_RUN: {0}")]
    Run(#[source] kvm_ioctls::Error),
}

/// What the vCPU thread needs to run a command or a trim on the VM.
pub struct VmState<'a> {
    pub vm_fd: &'a VmFd,
    pub mem: &'a GuestMemory,
    /// The memfd this VM was restored from, if any.
    pub base: Option<&'a File>,
    /// Guest pages a warm made anonymous: what a trim looks at.
    pub anonymous: Vec<Range<usize>>,
}

/// Runs `command` on the vCPU thread of a VM paused in state `paused` (`fresh`: before the
/// guest's first instruction). Returns guest pages: where the export may differ from the
/// base, or which the reset or become rewrote. `stop` interrupts a touch.
pub fn run(
    command: &Command,
    vcpu: &mut VcpuFd,
    vm: &mut VmState<'_>,
    vsock: &mut VsockDevice,
    paused: &Paused,
    fresh: bool,
    stop: &AtomicBool,
) -> Result<Vec<usize>, CommandError> {
    match command {
        Command::Export(out) => {
            let dirty = dirty::take_dirty_pages(vm.vm_fd, vm.mem)?;
            let base = vm.base.ok_or(CommandError::NotRestored("exported"))?;
            Ok(dirty::export(vm.mem, base, &dirty, out)?)
        }
        Command::Reset(snapshot) => {
            let dirty = dirty::take_dirty_pages(vm.vm_fd, vm.mem)?;
            dirty::restore_pages(vm.mem, &snapshot.memory, &dirty)?;
            registers::load(vcpu, &snapshot.vcpu)?;
            vsock.restore_state(&snapshot.device);
            Ok(dirty)
        }
        Command::Touch { routine, ranges } => {
            if !fresh {
                return Err(CommandError::AlreadyRan);
            }
            let base = vm.base.ok_or(CommandError::NotRestored("warmed"))?;
            // Changing the host mapping makes KVM drop its mappings around the change,
            // so every range is made the VM's own before the guest touches any. So are
            // the page tables, which `Become` rewrites.
            let written = ranges.iter().filter(|r| r.write).map(|r| r.pages.clone());
            for pages in written.chain(std::iter::once(PAGE_TABLES..PAGE_TABLES_END)) {
                let anonymous = warm::privatize(vm.mem, base, pages)?;
                vm.anonymous.extend(anonymous);
            }
            for range in ranges {
                touch(vcpu, paused, *routine, range, stop)?;
                // Debug builds (the tests) check what `Become` relies on.
                if cfg!(debug_assertions) {
                    warm::check_unchanged(vm.mem, base, range.pages.clone())?;
                }
            }
            registers::load(vcpu, &paused.vcpu)?;
            Ok(Vec::new())
        }
        Command::Become {
            snapshot,
            log_dirty,
        } => {
            let (base, differ) = snapshot
                .base
                .as_ref()
                .ok_or(CommandError::NotFromTemplate)?;
            if !vm.base.is_some_and(|b| std::ptr::eq(b, &*base.memory)) {
                return Err(CommandError::OtherTemplate);
            }
            // Besides the pages where the snapshot differs from the template, the page
            // tables differ: KVM sets their accessed and dirty bits as any VM runs, this
            // one's touch included.
            let mut pages: Vec<usize> = (PAGE_TABLES as usize / PAGE_SIZE
                ..PAGE_TABLES_END as usize / PAGE_SIZE)
                .chain(differ.iter().copied())
                .collect();
            pages.sort_unstable();
            pages.dedup();
            dirty::restore_pages(vm.mem, &snapshot.memory, &pages)?;
            registers::load(vcpu, &snapshot.vcpu)?;
            vsock.restore_state(&snapshot.device);
            if *log_dirty {
                memory::register(vm.vm_fd, vm.mem, true)?;
            }
            Ok(pages)
        }
    }
}

/// Runs the touch routine over one range until it rings the kick doorbell.
fn touch(
    vcpu: &mut VcpuFd,
    paused: &Paused,
    routine: u64,
    range: &Touch,
    stop: &AtomicBool,
) -> Result<(), CommandError> {
    let mut regs = paused.vcpu.regs;
    regs.rip = routine;
    regs.rdi = range.pages.start;
    regs.rsi = range.pages.end;
    regs.rdx = u64::from(range.write);
    vcpu.set_regs(&regs).map_err(RegisterError::SetRegs)?;
    loop {
        match vcpu.run() {
            Ok(VcpuExit::IoOut(DOORBELL_KICK_PORT, _)) => break,
            Ok(exit) => return Err(CommandError::TouchExit(format!("{exit:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                if stop.load(Ordering::SeqCst) {
                    return Err(CommandError::Stopped);
                }
            }
            Err(e) => return Err(CommandError::Run(e)),
        }
    }
    Ok(registers::complete_exit(vcpu)?)
}
