//! The vCPU thread: runs the guest, dispatches its exits to the devices, and ends the VM on
//! anything unexpected. Only this thread touches the vCPU, guest memory and devices.

use ember_jail::seccomp::BpfProgram;
use std::fs::File;
use std::sync::atomic::Ordering;
use std::sync::OnceLock;
use std::sync::{Arc, Once};
use std::thread::JoinHandle;
use std::time::Duration;

use ember_wire::boot::exit_code;
use ember_wire::layout::{
    DOORBELL_KICK_PORT, DOORBELL_WAIT_PORT, FAULT_PORT, POWER_OFF_PORT, SERIAL_PORT,
    VIRTIO_MMIO_BASE, VIRTIO_MMIO_SIZE,
};
use kvm_ioctls::{VcpuExit, VcpuFd, VmFd};
use vmm_sys_util::signal::{register_signal_handler, Killable, SIGRTMIN};

use super::command::{self, VmState};
use super::control::{Paused, VcpuControl};
use super::exit::{GuestError, GuestFault, VcpuError, VmExit};
use super::{registers, warm};
use crate::devices::serial::{GuestLog, SerialDevice};
use crate::devices::vsock::hub::Hub;
use crate::devices::vsock::{Doorbell, VsockDevice};
use crate::memory::GuestMemory;

/// Everything the vCPU thread owns.
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

/// Captures the paused state, publishes it, runs the host's commands, and waits until
/// resumed or stopped.
fn pause(
    vcpu: &mut VcpuFd,
    vm: &mut VmState<'_>,
    dev: &mut Devices,
    control: &VcpuControl,
) -> Result<(), VcpuError> {
    let state = registers::capture(vcpu).map_err(VcpuError::Capture)?;
    control.publish(Paused {
        vcpu: state,
        device: dev.vsock.state(),
    });
    hold(vcpu, vm, dev, control, false);
    Ok(())
}

/// While the vCPU is paused, runs the host's commands until resumed or stopped (`fresh`:
/// the guest has not run yet).
fn hold(
    vcpu: &mut VcpuFd,
    vm: &mut VmState<'_>,
    dev: &mut Devices,
    control: &VcpuControl,
    fresh: bool,
) {
    let stop = control.stop_requested();
    control.serve_commands(|command, paused| {
        command::run(command, vcpu, vm, &mut dev.vsock, paused, fresh, stop)
    });
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

/// Signals the vCPU thread once (it leaves `KVM_RUN` and checks its stop flag).
pub fn kick(thread: &JoinHandle<()>) {
    let _ = thread.kill(kick_signal());
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

/// The seccomp filter every vCPU thread adds for itself, in a VM process (see
/// [`confine_vcpu_threads`]).
static CONFINEMENT: OnceLock<BpfProgram> = OnceLock::new();

/// Every vCPU thread started from now on narrows itself to `program` before it runs the
/// guest: a VM process's thread that emulates devices for the guest cannot talk to the
/// worker, start threads or make memfds.
pub fn confine_vcpu_threads(program: BpfProgram) {
    let _ = CONFINEMENT.set(program);
}

pub fn run(ctx: VcpuContext) {
    kick_signal();
    // SAFETY: gettid has no preconditions.
    ctx.control.set_tid(unsafe { libc::gettid() });
    if let Some(program) = CONFINEMENT.get() {
        if let Err(e) = ember_jail::seccomp::apply_to_thread(program) {
            let exit = VmExit::kvm(VcpuError::Confine(e.to_string()));
            ctx.hub.kill(Arc::new(exit.clone()));
            ctx.control.finish(exit);
            return;
        }
    }
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
    hub.kill(Arc::new(exit.clone()));
    control.finish(exit);
}

struct Devices {
    serial: SerialDevice,
    vsock: VsockDevice,
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
        if control.stop_requested().load(Ordering::SeqCst) {
            return VmExit::Stopped;
        }
        let next = match vcpu.run() {
            Ok(VcpuExit::IoOut(port, data)) => match port {
                DOORBELL_WAIT_PORT | DOORBELL_KICK_PORT => {
                    match dev.vsock.doorbell(port == DOORBELL_WAIT_PORT, mem) {
                        Ok(Doorbell::Resume) => Next::Continue,
                        Ok(Doorbell::Pause) => Next::Pause,
                        Ok(Doorbell::Trim) => Next::Trim,
                        Err(e) => Next::Exit(VmExit::guest(e)),
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
                    Err(e) => Next::Exit(VmExit::guest(e)),
                }
            }
            Ok(VcpuExit::MmioRead(addr, _)) | Ok(VcpuExit::MmioWrite(addr, _)) => {
                Next::Exit(VmExit::guest(GuestError::Unbacked(addr)))
            }
            Ok(VcpuExit::Shutdown) => Next::Exit(VmExit::TripleFault),
            Ok(VcpuExit::Hlt) => Next::Exit(VmExit::guest(GuestError::Halted)),
            Ok(VcpuExit::FailEntry(reason, _)) => {
                Next::Exit(VmExit::kvm(VcpuError::FailEntry(reason)))
            }
            Ok(VcpuExit::InternalError) => Next::Exit(VmExit::kvm(VcpuError::Internal)),
            Ok(other) => Next::Exit(VmExit::guest(GuestError::UnexpectedExit(format!(
                "{other:?}"
            )))),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => Next::Continue,
            Err(e) => Next::Exit(VmExit::kvm(VcpuError::Run(e))),
        };
        match next {
            Next::Continue => {}
            Next::Exit(exit) => return exit,
            Next::Fault => return fault(&vcpu),
            Next::Pause => {
                if let Err(e) = pause(&mut vcpu, vm, dev, control) {
                    return VmExit::kvm(e);
                }
            }
            Next::Trim => match warm::trim(vm.mem, &vm.anonymous) {
                Ok(pages) => log::debug!("trim gave back {pages} zero pages"),
                Err(e) => return VmExit::kvm(VcpuError::Trim(e)),
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
        (Err(e), _) | (_, Err(e)) => VmExit::kvm(VcpuError::FaultRegisters(e)),
    }
}
