//! One QEMU machine booting the worker image, with its serial console read line by line.
//!
//! The machine is emulated (TCG): on this host `-accel kvm` cannot boot a stock kernel,
//! while TCG with `-cpu max` offers the guest SVM, so the image's kernel loads `kvm_amd` and
//! its `/dev/kvm` runs real micro-VMs (slowly). By default it has no network device at
//! all; [`Machine::vsock`] gives it a vsock device, [`Machine::restricted_nic`] a NIC on
//! QEMU's user-mode network that reaches nothing outside the guest's own subnet.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::tools::tools;
use crate::vsock::VsockDevice;

/// Guest memory: the worker's micro-VMs live in it.
const MEMORY_MIB: u32 = 1024;

/// How the machine boots.
#[derive(Clone, Debug)]
pub enum Boot {
    /// `-kernel`/`-initrd`/`-append`, as PXE or a boot loader would.
    Direct {
        kernel: PathBuf,
        initrd: PathBuf,
        cmdline: String,
    },
    /// OVMF firmware and the GPT disk image, as a UEFI machine would.
    Uefi { disk: PathBuf },
}

/// A machine to start: how it boots, its CPU and its devices.
#[derive(Debug)]
pub struct Machine {
    boot: Boot,
    cpu: String,
    vsock: Option<PathBuf>,
    nic: bool,
}

impl Machine {
    /// A machine booting `boot` on QEMU's `-cpu max` (which offers SVM), without devices.
    pub fn new(boot: Boot) -> Machine {
        Machine {
            boot,
            cpu: "max".into(),
            vsock: None,
            nic: false,
        }
    }

    /// QEMU's `-cpu` model (`max,-svm,-vmx` takes virtualization away).
    pub fn cpu(mut self, cpu: &str) -> Machine {
        self.cpu = cpu.into();
        self
    }

    /// A virtio-vsock device (guest CID [`crate::vsock::GUEST_CID`]) whose host side is the
    /// hybrid vsock socket `uds` (see [`crate::vsock`]).
    pub fn vsock(mut self, uds: &Path) -> Machine {
        self.vsock = Some(uds.to_owned());
        self
    }

    /// A virtio NIC on QEMU's user-mode network with `restrict=on` and no forwards: the
    /// guest gets an address from QEMU's built-in DHCP server, but none of its packets is
    /// routed to the host or beyond, and nothing comes in.
    pub fn restricted_nic(mut self) -> Machine {
        self.nic = true;
        self
    }

    /// Starts QEMU (and the vsock device first, when asked for).
    pub fn start(self) -> Qemu {
        let tools = tools();
        let mut command = Command::new(&tools.qemu);
        command
            .args(["-accel", "tcg", "-cpu", &self.cpu, "-smp", "1"])
            .args(["-m", &format!("{MEMORY_MIB}M")])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            // A reboot ends QEMU like a power-off.
            .arg("-no-reboot");
        let vsock = self.vsock.as_deref().map(VsockDevice::start);
        match &vsock {
            // vhost-user maps guest memory into the device's process: it must be shared.
            Some(device) => {
                command
                    .arg("-object")
                    .arg(format!(
                        "memory-backend-memfd,id=mem,size={MEMORY_MIB}M,share=on"
                    ))
                    .args(["-machine", "q35,memory-backend=mem", "-chardev"])
                    .arg(format!(
                        "socket,id=vsock,path={}",
                        device.socket().display()
                    ))
                    .args(["-device", "vhost-user-vsock-pci,chardev=vsock"]);
            }
            None => {
                command.args(["-machine", "q35"]);
            }
        }
        match self.nic {
            true => command.args(["-nic", "user,restrict=on,model=virtio-net-pci"]),
            false => command.args(["-nic", "none"]),
        };
        let vars = boot_args(&mut command, &self.boot);
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start qemu-system-x86_64");
        let console = ember_testkit::stdout_lines(&mut child);
        Qemu {
            child,
            console,
            seen: Vec::new(),
            _vsock: vsock,
            _vars: vars,
        }
    }
}

/// Adds `boot`'s arguments; a UEFI boot's variable store lives in the directory returned.
fn boot_args(command: &mut Command, boot: &Boot) -> Option<tempfile::TempDir> {
    match boot {
        Boot::Direct {
            kernel,
            initrd,
            cmdline,
        } => {
            command
                .arg("-kernel")
                .arg(kernel)
                .arg("-initrd")
                .arg(initrd)
                .args(["-append", cmdline]);
            None
        }
        Boot::Uefi { disk } => {
            let tools = tools();
            // The firmware writes its variables: each machine gets its own copy.
            let dir = tempfile::tempdir().unwrap();
            let copy = dir.path().join("OVMF_VARS.fd");
            std::fs::copy(&tools.ovmf_vars, &copy).unwrap();
            command
                .arg("-drive")
                .arg(drive("pflash", &tools.ovmf_code, "on"))
                .arg("-drive")
                .arg(drive("pflash", &copy, "off"))
                .arg("-drive")
                .arg(format!(
                    "if=virtio,format=raw,snapshot=on,file={}",
                    disk.display()
                ));
            Some(dir)
        }
    }
}

/// A running QEMU, killed when dropped (then its vsock device).
pub struct Qemu {
    child: Child,
    console: Receiver<String>,
    /// Every console line read so far, for failure messages.
    pub seen: Vec<String>,
    _vsock: Option<VsockDevice>,
    _vars: Option<tempfile::TempDir>,
}

impl Qemu {
    /// The first console line (from now on) containing `text`, within `timeout`.
    pub fn wait_for(&mut self, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.console.recv_timeout(left) {
                Ok(line) => {
                    let found = line.contains(text);
                    self.seen.push(line.clone());
                    if found {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no console line with {text:?} within {timeout:?}; console:\n{}",
                        self.tail()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "QEMU ended before a console line with {text:?}; console:\n{}",
                        self.tail()
                    )
                }
            }
        }
    }

    /// Waits for QEMU to end by itself (the guest powered off), reading the console.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            while let Ok(line) = self.console.try_recv() {
                self.seen.push(line);
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "QEMU still runs after {timeout:?}; console:\n{}",
                self.tail()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The last console lines, for a failure message.
    pub fn tail(&self) -> String {
        let from = self.seen.len().saturating_sub(60);
        self.seen[from..].join("\n")
    }
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A flash drive of OVMF: its code (unit 0, read-only) or its variables (unit 1).
fn drive(interface: &str, file: &Path, readonly: &str) -> String {
    let unit = u8::from(readonly == "off");
    format!(
        "if={interface},format=raw,unit={unit},readonly={readonly},file={}",
        file.display()
    )
}
