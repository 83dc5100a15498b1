//! One micro-VM: guest memory, the guest image, one vCPU on its own thread, a serial port
//! and a virtio-vsock device. [`Vm::boot`] builds it; dropping it stops and frees it.

mod command;
mod config;
mod control;
mod cpu;
mod dirty;
mod error;
mod exit;
mod loader;
mod registers;
mod snapshot;
mod spare;
mod vcpu;
mod warm;
pub mod watchdog;

use std::error::Error;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ember_wire::boot::{flags, BootInfo};
use ember_wire::layout::{BOOT_INFO, STACK_GUARD, STACK_SIZE, VIRTIO_MMIO_BASE};
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

use crate::devices::serial::{self, GuestLog};
use crate::devices::vsock::hub::Hub;
pub use crate::devices::vsock::hub::Pause;
use crate::devices::vsock::stream::VsockStream;
use crate::devices::vsock::uds::UdsListener;
use crate::devices::vsock::VsockDevice;
use crate::memory::{self, GuestMemory};
use crate::{guest_image, kvm};
pub use command::{Command, CommandError, Touch};
pub use config::{ConfigError, VmConfig};
pub use control::Paused;
use control::VcpuControl;
pub use cpu::TablesError;
pub(crate) use cpu::{write_system_tables, Entry};
pub use dirty::DirtyError;
pub use error::VmError;
pub use exit::{GuestError, GuestFault, VcpuError, VmExit};
pub use loader::ImageError;
use loader::LoadedImage;
pub(crate) use registers::configure as configure_vcpu;
pub use registers::{RegisterError, VcpuState};
pub use snapshot::{Snapshot, SnapshotState};
pub use spare::SpareVm;
pub use vcpu::confine_vcpu_threads;
use vcpu::VcpuContext;
pub use warm::WarmError;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A running micro-VM. `Sync`: one thread may block on a stream while another stops the VM
/// (that is how timeouts are enforced).
pub struct Vm {
    id: String,
    hub: Arc<Hub>,
    control: Arc<VcpuControl>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
    log: Arc<GuestLog>,
    uds: Mutex<Option<UdsListener>>,
}

impl Vm {
    /// Creates the VM and starts its vCPU; returns as soon as the guest is running.
    pub fn boot(config: &VmConfig) -> Result<Vm, VmError> {
        Self::boot_backed(config, &memory::Backing::Anonymous).map(|(vm, _)| vm)
    }

    /// Boots a VM on `backing`; also says where the guest image was loaded.
    fn boot_backed(
        config: &VmConfig,
        backing: &memory::Backing,
    ) -> Result<(Vm, LoadedImage), VmError> {
        config.check_guest_cid()?;
        let mem_size = config.mem_size()?;
        let sys = kvm::system()?;
        let vm_fd = kvm::create_vm()?;
        let mem = memory::create(&vm_fd, mem_size, backing, config.track_dirty)?;
        let image = loader::load(&mem, mem_size, guest_image::ELF)?;
        cpu::write_system_tables(&mem, mem_size, Some(image.fault_stubs))?;

        let vcpu = kvm::create_vcpu(&vm_fd)?;
        let entry = cpu::Entry {
            rip: image.entry,
            // As if `call`ed: the ABI expects rsp + 8 to be 16-byte aligned at entry.
            rsp: mem_size - 8,
            arg: BOOT_INFO,
        };
        configure_vcpu(&vcpu, &sys.cpuid, &entry, true)?;

        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(VmError::Seed)?;
        let boot_info = BootInfo {
            flags: (if config.test_frames {
                flags::TEST_FRAMES
            } else {
                0
            }) | (if config.verbose { flags::VERBOSE } else { 0 }),
            mem_size,
            heap_start: image.end,
            heap_end: mem_size - STACK_SIZE - STACK_GUARD,
            vsock_mmio: VIRTIO_MMIO_BASE,
            guest_cid: config.guest_cid,
            tsc_khz: u64::from(vcpu.get_tsc_khz().unwrap_or(0)),
            boot_unix_ns: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64),
            seed,
        };
        mem.write_slice(&boot_info.encode(), GuestAddress(BOOT_INFO))
            .map_err(VmError::BootInfo)?;
        let vsock = VsockDevice::new(config.guest_cid, Arc::new(Hub::default()));
        let vm = Self::start(config, vm_fd, vcpu, mem, vsock, None, None)?;
        Ok((vm, image))
    }

    /// Starts a VM from a snapshot: its memory copy-on-write over the snapshot's, its vCPU
    /// and device exactly as captured. `config.mem_mib` and `guest_cid` are the snapshot's.
    pub fn restore(snapshot: &Snapshot, config: &VmConfig) -> Result<Vm, VmError> {
        Self::restore_with(snapshot, config, false)
    }

    /// Like [`Vm::restore`], but the vCPU stays paused before its first instruction, taking
    /// commands, until [`Vm::resume`].
    fn restore_paused(snapshot: &Snapshot, config: &VmConfig) -> Result<Vm, VmError> {
        Self::restore_with(snapshot, config, true)
    }

    fn restore_with(snapshot: &Snapshot, config: &VmConfig, paused: bool) -> Result<Vm, VmError> {
        let sys = kvm::system()?;
        let vm_fd = kvm::create_vm()?;
        let backing = memory::Backing::CopyOnWrite(snapshot.memory.clone());
        let mem = memory::create(&vm_fd, snapshot.mem_size, &backing, config.track_dirty)?;
        let vcpu = kvm::create_vcpu(&vm_fd)?;
        registers::set_state(&vcpu, &sys.cpuid, &snapshot.vcpu)?;
        let hub = Arc::new(Hub::default());
        let vsock = VsockDevice::restore(snapshot.guest_cid, hub, &snapshot.device);
        let base = Some(snapshot.memory.clone());
        let paused = paused.then(|| Paused {
            vcpu: snapshot.vcpu.clone(),
            device: snapshot.device.clone(),
        });
        Self::start(config, vm_fd, vcpu, mem, vsock, base, paused)
    }

    /// Runs the vCPU on its own thread; with `paused`, the thread first waits for commands
    /// as if it had paused in that state.
    fn start(
        config: &VmConfig,
        vm_fd: VmFd,
        vcpu: VcpuFd,
        mem: GuestMemory,
        vsock: VsockDevice,
        base: Option<Arc<std::fs::File>>,
        paused: Option<Paused>,
    ) -> Result<Vm, VmError> {
        let hub = vsock.hub().clone();
        let id = format!(
            "{}-{}",
            std::process::id(),
            NEXT_ID.fetch_add(1, Ordering::Relaxed)
        );
        let log = GuestLog::new(id.clone());
        let uds = match &config.uds_path {
            Some(path) => Some(
                UdsListener::start(path, hub.clone(), &id).map_err(|source| VmError::Uds {
                    path: path.clone(),
                    source,
                })?,
            ),
            None => None,
        };
        let control = Arc::new(VcpuControl::default());
        if let Some(paused) = paused {
            control.publish(paused);
        }
        let ctx = VcpuContext {
            vcpu,
            vm_fd,
            mem,
            serial: serial::new(log.clone()),
            vsock,
            hub: hub.clone(),
            control: control.clone(),
            log: log.clone(),
            base,
        };
        let thread = std::thread::Builder::new()
            .name(format!("vcpu-{id}"))
            .spawn(move || vcpu::run(ctx))
            .map_err(VmError::VcpuThread)?;
        Ok(Vm {
            id,
            hub,
            control,
            thread: Arc::new(Mutex::new(Some(thread))),
            log,
            uds: Mutex::new(uds),
        })
    }

    /// Pauses the guest at its next idle moment (with no vsock connection open, for
    /// [`Pause::Idle`]) and returns its state; the vCPU stays paused until [`Vm::resume`]
    /// or [`Vm::stop`].
    pub fn pause(&self, when: Pause, timeout: Duration) -> Result<Paused, VmError> {
        self.hub.request_pause(when);
        self.control
            .wait_paused(timeout)
            .ok_or_else(|| match self.exit() {
                Some(exit) => VmError::EndedBeforePause(exit),
                None => VmError::NotIdle(timeout),
            })
    }

    pub fn resume(&self) {
        self.control.resume();
    }

    /// Runs `command` on a paused VM; returns the guest pages it dealt with (for an
    /// export, those where the new snapshot may differ from its base).
    pub fn command(&self, command: Command) -> Result<Vec<usize>, VmError> {
        Ok(self.control.command(command)?)
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Once the guest has been idle a while (10 ms), gives back the host memory of the
    /// pages a warm made the VM's own that still hold only zeros (see [`SpareVm`]); does
    /// not wait.
    pub fn trim(&self) {
        self.hub.request_trim();
    }

    /// Opens a stream to a vsock port in the guest.
    pub fn connect(&self, port: u32, timeout: Duration) -> std::io::Result<VsockStream> {
        VsockStream::connect(self.hub.clone(), port, timeout)
    }

    /// Opens a stream to a vsock port in the guest without waiting for it to accept: the
    /// handshake overlaps the first request, and a refusal is an error on the first read.
    pub fn open(&self, port: u32) -> std::io::Result<VsockStream> {
        VsockStream::open(self.hub.clone(), port)
    }

    /// How the VM ended, if it has.
    pub fn exit(&self) -> Option<VmExit> {
        self.control.exit()
    }

    /// Waits up to `timeout` for the VM to end on its own.
    pub fn wait(&self, timeout: Duration) -> Option<VmExit> {
        self.control.wait(timeout)
    }

    /// Stops the vCPU wherever it is (running guest code or parked) and tears the VM down.
    /// Returns how it ended: `Stopped`, or the earlier exit if it had already ended.
    pub fn stop(&self) -> VmExit {
        let thread = self.thread.lock().unwrap().take();
        if let Some(thread) = thread {
            self.control.request_stop();
            self.hub.request_stop();
            vcpu::kick_until_finished(&thread);
            let _ = thread.join();
        }
        self.uds.lock().unwrap().take();
        self.control.exit().unwrap_or(VmExit::Stopped)
    }

    /// A handle that stops this VM from another thread without waiting (what
    /// [`watchdog`] uses).
    pub fn stopper(&self) -> Stopper {
        Stopper {
            control: self.control.clone(),
            hub: self.hub.clone(),
            thread: self.thread.clone(),
        }
    }

    /// The guest's serial log (most recent lines).
    pub fn guest_log(&self) -> Vec<String> {
        self.log.lines()
    }

    /// Linux thread id of the vCPU thread (for CPU accounting).
    pub fn vcpu_tid(&self) -> Option<i32> {
        self.control.tid()
    }
}

/// Stops a [`Vm`] from any thread, without waiting for it (see [`Vm::stopper`]).
#[derive(Clone)]
pub struct Stopper {
    control: Arc<VcpuControl>,
    hub: Arc<Hub>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl Stopper {
    /// Asks the vCPU to stop and fails every stream of the VM with `why` at once, so a
    /// host thread blocked on one returns.
    pub fn request_stop(&self, why: Arc<dyn Error + Send + Sync>) {
        self.control.request_stop();
        self.hub.kill(why);
    }

    /// Knocks the vCPU thread out of guest code; `false` once it has left its run loop
    /// (or the VM's owner has taken it down).
    pub fn kick(&self) -> bool {
        match self.thread.lock().unwrap().as_ref() {
            Some(thread) if !thread.is_finished() => {
                vcpu::kick(thread);
                true
            }
            _ => false,
        }
    }

    /// A stopper of no VM.
    #[cfg(test)]
    pub(crate) fn detached() -> Stopper {
        Stopper {
            control: Arc::default(),
            hub: Arc::default(),
            thread: Arc::default(),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        self.stop();
    }
}
