//! One QEMU machine booting the worker image, with its serial console read line by line.
//!
//! The machine is emulated (TCG): on this host `-accel kvm` cannot boot a stock kernel,
//! while TCG with `-cpu max` offers the guest SVM, so the image's kernel loads `kvm_amd` and
//! its `/dev/kvm` runs real micro-VMs (slowly). It gets no network device at all.

use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use crate::tools::tools;

/// Guest memory: the worker's micro-VMs live in it.
const MEMORY_MIB: u32 = 1024;

/// How the machine boots.
#[derive(Debug)]
pub enum Boot<'a> {
    /// `-kernel`/`-initrd`/`-append`, as PXE or a boot loader would.
    Direct {
        kernel: &'a Path,
        initrd: &'a Path,
        cmdline: &'a str,
    },
    /// OVMF firmware and the GPT disk image, as a UEFI machine would.
    Uefi { disk: &'a Path },
}

/// A running QEMU, killed when dropped.
pub struct Qemu {
    child: Child,
    console: Receiver<String>,
    /// Every console line read so far, for failure messages.
    pub seen: Vec<String>,
    _vars: Option<tempfile::TempDir>,
}

impl Qemu {
    /// Boots `boot`; `cpu` is QEMU's `-cpu` (`max` offers SVM).
    pub fn start(boot: Boot<'_>, cpu: &str) -> Qemu {
        let tools = tools();
        let mut command = Command::new(&tools.qemu);
        command
            .args(["-machine", "q35", "-accel", "tcg", "-cpu", cpu, "-smp", "1"])
            .args(["-m", &format!("{MEMORY_MIB}M")])
            .args(["-display", "none", "-monitor", "none", "-serial", "stdio"])
            // No network device of any kind, and a reboot ends QEMU like a power-off.
            .args(["-nic", "none", "-no-reboot"]);
        let mut vars = None;
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
            }
            Boot::Uefi { disk } => {
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
                vars = Some(dir);
            }
        }
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
            _vars: vars,
        }
    }

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
