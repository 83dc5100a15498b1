//! The vCPU thread: runs the guest, dispatches its exits to the devices, and ends the VM on
//! anything unexpected. Only this thread touches the vCPU, guest memory and devices.

use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use super::memory::GuestMemory;
use ember_wire::boot::exit_code;
use ember_wire::layout::{
    DOORBELL_KICK_PORT, DOORBELL_WAIT_PORT, FAULT_PORT, POWER_OFF_PORT, SERIAL_PORT,
    VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE,
};
use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs, CpuId};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::command::{self, Command};
use super::{cpu, warm, GuestFault, VmError, VmExit};
use crate::devices::serial::{GuestLog, SerialDevice};
use crate::devices::virtio_mmio::TransportState;
use crate::devices::vsock::hub::Hub;
use crate::devices::vsock::{Doorbell, VsockDevice};
use std::fs::File;

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
    result: Option<Result<Vec<usize>, String>>,
}

/// A vCPU stopped between two instructions of an idle guest, and its device.
#[derive(Clone)]
pub struct Paused {
    pub vcpu: VcpuState,
    pub device: TransportState,
}

/// The registers a snapshot keeps.
#[derive(Clone)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: kvm_fpu,
}

impl VcpuControl {
    pub fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.wake_paused();
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
    /// [`command::run`]).
    pub fn command(&self, command: Command) -> Result<Vec<usize>, String> {
        let mut slot = self.paused.lock().unwrap();
        if slot.paused.is_none() {
            return Err("the VM is not paused".into());
        }
        slot.command = Some(command);
        slot.result = None;
        self.pause_changed.notify_all();
        while slot.result.is_none() {
            if self.exit.lock().unwrap().is_some() {
                return Err("the VM ended".into());
            }
            slot = self.pause_changed.wait(slot).unwrap();
        }
        slot.result.take().unwrap()
    }

    /// Lets a paused vCPU run again.
    pub fn resume(&self) {
        self.paused.lock().unwrap().paused.take();
        self.pause_changed.notify_all();
    }

    /// Marks the vCPU paused in `state`: called by the vCPU thread when it pauses, or
    /// before it starts, for a VM that should wait for commands before running.
    pub fn publish(&self, state: Paused) {
        self.paused.lock().unwrap().paused = Some(state);
        self.pause_changed.notify_all();
    }

    fn wake_paused(&self) {
        let _guard = self.paused.lock().unwrap();
        self.pause_changed.notify_all();
    }

    pub fn tid(&self) -> Option<i32> {
        Some(self.tid.load(Ordering::SeqCst)).filter(|t| *t != 0)
    }
}

pub struct VcpuContext {
    pub vcpu: VcpuFd,
    pub vm_fd: VmFd,
    pub mem: GuestMemory,
    pub serial: SerialDevice,
    pub vsock: VsockDevice,
    pub hub: Arc<Hub>,
    pub control: Arc<VcpuControl>,
    pub log: Arc<GuestLog>,
    /// The snapshot memory this VM was restored from.
    pub base: Option<Arc<File>>,
}

/// Loads CPUID and the ring-3 entry state into a fresh vCPU.
pub fn configure(
    vcpu: &VcpuFd,
    cpuid: &CpuId,
    entry: &cpu::Entry,
    fault_stubs: bool,
) -> Result<(), VmError> {
    set_state(
        vcpu,
        cpuid,
        &VcpuState {
            regs: cpu::regs(entry),
            sregs: cpu::sregs(Default::default(), fault_stubs),
            fpu: cpu::fpu(),
        },
    )
}

/// Loads CPUID and a register state into a fresh vCPU.
pub fn set_state(vcpu: &VcpuFd, cpuid: &CpuId, state: &VcpuState) -> Result<(), VmError> {
    vcpu.set_cpuid2(cpuid)
        .map_err(|e| VmError::Kvm(format!("KVM_SET_CPUID2: {e}")))?;
    load_registers(vcpu, state).map_err(VmError::Kvm)
}

/// Loads a register state (into a fresh vCPU, or one that is paused between two
/// instructions).
pub fn load_registers(vcpu: &VcpuFd, state: &VcpuState) -> Result<(), String> {
    vcpu.set_sregs(&state.sregs)
        .map_err(|e| format!("KVM_SET_SREGS: {e}"))?;
    vcpu.set_regs(&state.regs)
        .map_err(|e| format!("KVM_SET_REGS: {e}"))?;
    vcpu.set_fpu(&state.fpu)
        .map_err(|e| format!("KVM_SET_FPU: {e}"))
}

/// Finishes the port write the guest last exited on: KVM completes it on the next entry,
/// and `immediate_exit` returns before running a single guest instruction.
pub fn complete_exit(vcpu: &mut VcpuFd) -> Result<(), String> {
    vcpu.set_kvm_immediate_exit(1);
    let entry = vcpu.run().map(|exit| format!("{exit:?}"));
    vcpu.set_kvm_immediate_exit(0);
    match entry {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        Err(e) => Err(format!("completing the last exit: {e}")),
        Ok(exit) => Err(format!(
            "unexpected exit while completing the last one: {exit}"
        )),
    }
}

/// Completes the doorbell the guest is parked on, then reads the registers: the state of a
/// guest between two instructions.
fn capture(vcpu: &mut VcpuFd) -> Result<VcpuState, String> {
    complete_exit(vcpu)?;
    Ok(VcpuState {
        regs: vcpu.get_regs().map_err(|e| e.to_string())?,
        sregs: vcpu.get_sregs().map_err(|e| e.to_string())?,
        fpu: vcpu.get_fpu().map_err(|e| e.to_string())?,
    })
}

/// Captures the paused state, publishes it, runs the host's commands, and waits until
/// resumed or stopped.
fn pause(
    vcpu: &mut VcpuFd,
    vm: &mut VmState<'_>,
    dev: &mut Devices,
    control: &VcpuControl,
) -> Next {
    let state = match capture(vcpu) {
        Ok(state) => state,
        Err(e) => return Next::Exit(VmExit::KvmError(e)),
    };
    control.publish(Paused {
        vcpu: state,
        device: dev.vsock.state(),
    });
    hold(vcpu, vm, dev, control, false);
    Next::Continue
}

/// While the vCPU is paused, runs the host's commands until resumed or stopped (`fresh`:
/// the guest has not run yet). The lock is released while a command runs, so a stop
/// request never waits for one.
fn hold(
    vcpu: &mut VcpuFd,
    vm: &mut VmState<'_>,
    dev: &mut Devices,
    control: &VcpuControl,
    fresh: bool,
) {
    let mut slot = control.paused.lock().unwrap();
    while !control.stop.load(Ordering::SeqCst) && slot.paused.is_some() {
        if let Some(command) = slot.command.take() {
            let paused = slot.paused.clone().expect("checked by the loop");
            drop(slot);
            let result = command::run(&command, vcpu, vm, dev, &paused, fresh, &control.stop);
            slot = control.paused.lock().unwrap();
            slot.result = Some(result);
            control.pause_changed.notify_all();
        } else {
            slot = control.pause_changed.wait(slot).unwrap();
        }
    }
}

/// What the vCPU thread needs to run a command or a trim on the VM.
pub struct VmState<'a> {
    pub vm_fd: &'a VmFd,
    pub mem: &'a GuestMemory,
    /// The memfd this VM was restored from, if any.
    pub base: Option<&'a File>,
    /// Guest pages a warm made anonymous: what a trim looks at.
    pub anonymous: Vec<std::ops::Range<usize>>,
}

/// The signal that knocks a vCPU thread out of `KVM_RUN`.
fn kick_signal() -> i32 {
    static REGISTER: Once = Once::new();
    let signal = SIGRTMIN();
    REGISTER.call_once(|| {
        extern "C" fn noop(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}
        register_signal_handler(signal, noop).expect("registering the vCPU kick signal");
    });
    signal
}

/// Signals the vCPU thread until it has left its run loop. Repeating the signal closes the
/// window between the thread checking its stop flag and entering `KVM_RUN`.
pub fn kick_until_finished(thread: &JoinHandle<()>) {
    let signal = kick_signal();
    let mut pause = Duration::from_micros(50);
    while !thread.is_finished() {
        let _ = thread.kill(signal);
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(5));
    }
}

pub fn run(ctx: VcpuContext) {
    kick_signal();
    // SAFETY: gettid has no preconditions.
    ctx.control
        .tid
        .store(unsafe { libc::gettid() }, Ordering::SeqCst);
    let VcpuContext {
        vcpu,
        vm_fd,
        mem,
        serial,
        vsock,
        hub,
        control,
        log,
        base,
    } = ctx;
    let mut devices = Devices { serial, vsock };
    let mut state = VmState {
        vm_fd: &vm_fd,
        mem: &mem,
        base: base.as_deref(),
        anonymous: Vec::new(),
    };
    let exit = run_loop(vcpu, &mut state, &mut devices, &control, &log);
    drop(vm_fd);
    drop(mem);
    log::debug!("vm exited: {exit}");
    hub.kill(&exit.to_string());
    *control.exit.lock().unwrap() = Some(exit);
    control.exited.notify_all();
    control.wake_paused();
}

pub struct Devices {
    serial: SerialDevice,
    pub vsock: VsockDevice,
}

/// What an exit asks for once the borrow of the vCPU's run structure has ended.
enum Next {
    Continue,
    Fault,
    Pause,
    Trim,
    Exit(VmExit),
}

fn run_loop(
    mut vcpu: VcpuFd,
    vm: &mut VmState<'_>,
    dev: &mut Devices,
    control: &VcpuControl,
    log: &GuestLog,
) -> VmExit {
    let serial_ports = SERIAL_PORT..SERIAL_PORT + 8;
    let mmio = VIRTIO_MMIO_BASE..VIRTIO_MMIO_BASE + VIRTIO_MMIO_SIZE;
    let mem = vm.mem;
    // A VM restored paused takes the host's commands before its first instruction.
    hold(&mut vcpu, vm, dev, control, true);
    loop {
        if control.stop.load(Ordering::SeqCst) {
            return VmExit::Stopped;
        }
        let next = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => match port {
                DOORBELL_WAIT_PORT | DOORBELL_KICK_PORT => {
                    match dev.vsock.doorbell(port == DOORBELL_WAIT_PORT, mem) {
                        Ok(Doorbell::Resume) => Next::Continue,
                        Ok(Doorbell::Pause) => Next::Pause,
                        Ok(Doorbell::Trim) => Next::Trim,
                        Err(e) => Next::Exit(VmExit::GuestError(e.to_string())),
                    }
                }
                p if serial_ports.contains(&p) => {
                    for &b in data.iter() {
                        let _ = dev.serial.write((p - SERIAL_PORT) as u8, b);
                    }
                    Next::Continue
                }
                POWER_OFF_PORT => Next::Exit(power_off(data, log)),
                FAULT_PORT => Next::Fault,
                _ => Next::Continue,
            },
            Ok(VcpuExit::IoIn(port, data)) => {
                if serial_ports.contains(&port) {
                    for b in data.iter_mut() {
                        *b = dev.serial.read((port - SERIAL_PORT) as u8);
                    }
                } else {
                    data.fill(0xff);
                }
                Next::Continue
            }
            Ok(VcpuExit::MmioRead(addr, data)) if mmio.contains(&addr) => {
                dev.vsock.mmio_read(addr - VIRTIO_MMIO_BASE, data);
                Next::Continue
            }
            Ok(VcpuExit::MmioWrite(addr, data)) if mmio.contains(&addr) => {
                match dev.vsock.mmio_write(addr - VIRTIO_MMIO_BASE, data, mem) {
                    Ok(()) => Next::Continue,
                    Err(e) => Next::Exit(VmExit::GuestError(e.to_string())),
                }
            }
            Ok(VcpuExit::MmioRead(addr, _)) | Ok(VcpuExit::MmioWrite(addr, _)) => Next::Exit(
                VmExit::GuestError(format!("access to unbacked guest address {addr:#x}")),
            ),
            Ok(VcpuExit::Shutdown) => Next::Exit(VmExit::TripleFault),
            Ok(VcpuExit::Hlt) => Next::Exit(VmExit::GuestError("guest halted".into())),
            Ok(VcpuExit::FailEntry(reason, _)) => Next::Exit(VmExit::KvmError(format!(
                "VM entry failed (hardware reason {reason:#x})"
            ))),
            Ok(VcpuExit::InternalError) => Next::Exit(VmExit::KvmError(
                "KVM internal error (instruction emulation failed)".into(),
            )),
            Ok(other) => Next::Exit(VmExit::GuestError(format!("unexpected VM exit {other:?}"))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Next::Continue,
            Err(e) => Next::Exit(VmExit::KvmError(format!("KVM_RUN: {e}"))),
        };
        match next {
            Next::Continue => {}
            Next::Exit(exit) => return exit,
            Next::Fault => return fault(&vcpu),
            Next::Pause => {
                if let Next::Exit(exit) = pause(&mut vcpu, vm, dev, control) {
                    return exit;
                }
            }
            Next::Trim => match warm::trim(vm.mem, &vm.anonymous) {
                Ok(pages) => log::debug!("trim gave back {pages} zero pages"),
                Err(e) => return VmExit::KvmError(format!("trimming guest memory: {e}")),
            },
        }
    }
}

fn power_off(data: &[u8], log: &GuestLog) -> VmExit {
    let mut raw = [0u8; 4];
    let n = data.len().min(4);
    raw[..n].copy_from_slice(&data[..n]);
    match u32::from_le_bytes(raw) {
        exit_code::PANIC => VmExit::Panicked(
            log.lines()
                .last()
                .cloned()
                .unwrap_or_else(|| "(no message)".into()),
        ),
        code => VmExit::PoweredOff(code),
    }
}

/// Reads what the ring-0 stub left in registers: `rdi` vector, `rsi` error code, `r8` RIP,
/// `r9` RSP.
fn fault(vcpu: &VcpuFd) -> VmExit {
    match (vcpu.get_regs(), vcpu.get_sregs()) {
        (Ok(regs), Ok(sregs)) => VmExit::Fault(GuestFault {
            vector: regs.rdi as u8,
            error_code: regs.rsi,
            rip: regs.r8,
            rsp: regs.r9,
            cr2: sregs.cr2,
        }),
        (Err(e), _) | (_, Err(e)) => VmExit::KvmError(format!("reading fault registers: {e}")),
    }
}
