//! What the [`super::Vm`] handle and its vCPU thread share: the stop flag, how the VM
//! ended, and the pause slot through which a paused vCPU thread takes commands.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use super::command::{Command, CommandError};
use super::exit::VmExit;
use super::registers::VcpuState;
use crate::devices::virtio_mmio::TransportState;

/// A vCPU stopped between two instructions of an idle guest, and its device.
#[derive(Clone)]
pub struct Paused {
    pub vcpu: VcpuState,
    pub device: TransportState,
}

/// Shared between the vCPU thread and the [`super::Vm`] handle.
#[derive(Default)]
pub struct VcpuControl {
    stop: AtomicBool,
    tid: AtomicI32,
    exit: Mutex<Option<VmExit>>,
    exited: Condvar,
    /// Set by the vCPU thread while it is paused (guest parked, state captured), with the
    /// command the host gave the paused thread and its result.
    paused: Mutex<PauseSlot>,
    pause_changed: Condvar,
}

#[derive(Default)]
struct PauseSlot {
    paused: Option<Paused>,
    command: Option<Command>,
    result: Option<Result<Vec<usize>, CommandError>>,
}

impl VcpuControl {
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake_paused();
    }

    pub fn stop_requested(&self) -> &AtomicBool {
        &self.stop
    }

    pub fn exit(&self) -> Option<VmExit> {
        self.exit.lock().unwrap().clone()
    }

    pub fn wait(&self, timeout: Duration) -> Option<VmExit> {
        let guard = self.exit.lock().unwrap();
        let (guard, _) = self
            .exited
            .wait_timeout_while(guard, timeout, |e| e.is_none())
            .unwrap();
        guard.clone()
    }

    /// Waits up to `timeout` for the vCPU to pause; `None` if it did not (or the VM ended).
    pub fn wait_paused(&self, timeout: Duration) -> Option<Paused> {
        let guard = self.paused.lock().unwrap();
        let (guard, _) = self
            .pause_changed
            .wait_timeout_while(guard, timeout, |p| {
                p.paused.is_none() && self.exit.lock().unwrap().is_none()
            })
            .unwrap();
        guard.paused.clone()
    }

    /// Runs `command` on the paused vCPU thread and waits for its result (see
    /// [`super::command::run`]).
    pub fn command(&self, command: Command) -> Result<Vec<usize>, CommandError> {
        let mut slot = self.slot();
        if slot.paused.is_none() {
            return Err(CommandError::NotPaused);
        }
        slot.command = Some(command);
        slot.result = None;
        self.pause_changed.notify_all();
        while slot.result.is_none() {
            if self.exit.lock().unwrap().is_some() {
                return Err(CommandError::Ended);
            }
            slot = self.pause_changed.wait(slot).unwrap();
        }
        slot.result.take().unwrap()
    }

    /// Lets a paused vCPU run again.
    pub fn resume(&self) {
        self.slot().paused.take();
        self.pause_changed.notify_all();
    }

    /// Marks the vCPU paused in `state`: called by the vCPU thread when it pauses, or
    /// before it starts, for a VM that should wait for commands before running.
    pub fn publish(&self, state: Paused) {
        self.slot().paused = Some(state);
        self.pause_changed.notify_all();
    }

    /// On the vCPU thread while it is paused: runs each command the host gives (with the
    /// paused state) until resumed or stopped. The lock is released while a command runs,
    /// so a stop request never waits for one.
    pub fn serve_commands(
        &self,
        mut run: impl FnMut(&Command, &Paused) -> Result<Vec<usize>, CommandError>,
    ) {
        let mut slot = self.slot();
        while !self.stop.load(Ordering::SeqCst) && slot.paused.is_some() {
            if let Some(command) = slot.command.take() {
                let paused = slot.paused.clone().expect("checked by the loop");
                drop(slot);
                let result = run(&command, &paused);
                slot = self.slot();
                slot.result = Some(result);
                self.pause_changed.notify_all();
            } else {
                slot = self.pause_changed.wait(slot).unwrap();
            }
        }
    }

    fn slot(&self) -> MutexGuard<'_, PauseSlot> {
        self.paused.lock().unwrap()
    }

    /// Wakes whoever waits on the pause slot.
    fn wake_paused(&self) {
        let _guard = self.slot();
        self.pause_changed.notify_all();
    }

    /// Records how the VM ended and wakes everyone waiting on it.
    pub fn finish(&self, exit: VmExit) {
        *self.exit.lock().unwrap() = Some(exit);
        self.exited.notify_all();
        self.wake_paused();
    }

    pub fn set_tid(&self, tid: i32) {
        self.tid.store(tid, Ordering::SeqCst);
    }

    pub fn tid(&self) -> Option<i32> {
        Some(self.tid.load(Ordering::SeqCst)).filter(|t| *t != 0)
    }
}
