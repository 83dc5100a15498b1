//! A machine's virtio-vsock device, served outside QEMU by `vhost-device-vsock` over
//! vhost-user. Its host side is a Unix socket `UDS` in Firecracker's hybrid vsock
//! convention, which is what `ember-control --fleet-vsock-uds UDS` speaks (QEMU's own
//! `vhost-vsock-pci` would put the guest on the host's AF_VSOCK instead, and needs the host
//! kernel's vhost-vsock): the guest reaching host port P connects to `UDS_P`, and the host
//! reaches guest port P by connecting to `UDS` and saying `CONNECT P`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::tools::vhost_device_vsock;

/// The guest's CID (the host is 2).
pub const GUEST_CID: u32 = 3;

/// How long the device may take to listen for QEMU.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// A running `vhost-device-vsock`, killed when dropped.
pub struct VsockDevice {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl VsockDevice {
    /// Starts the device for one guest whose host side is `uds`, and waits until it
    /// listens for QEMU.
    pub fn start(uds: &Path) -> VsockDevice {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("vhost.sock");
        let vm = format!(
            "guest-cid={GUEST_CID},socket={},uds-path={}",
            socket.display(),
            uds.display()
        );
        let mut child = Command::new(vhost_device_vsock())
            .args(["--vm", &vm])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start vhost-device-vsock");
        let deadline = Instant::now() + START_TIMEOUT;
        while !socket.exists() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("vhost-device-vsock ended with {status} before listening");
            }
            assert!(
                Instant::now() < deadline,
                "vhost-device-vsock made no socket within {START_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        VsockDevice {
            child,
            socket,
            _dir: dir,
        }
    }

    /// The vhost-user socket QEMU connects to.
    pub fn socket(&self) -> &Path {
        &self.socket
    }
}

impl Drop for VsockDevice {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
