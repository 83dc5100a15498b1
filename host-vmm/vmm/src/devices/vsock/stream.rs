//! A host-side stream to a port in the guest, usable in-process like a socket.

use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::hub::Hub;

pub struct VsockStream {
    hub: Arc<Hub>,
    local: u32,
    read_timeout: Option<Duration>,
    write_deadline: Option<Instant>,
}

impl VsockStream {
    pub(crate) fn connect(hub: Arc<Hub>, port: u32, timeout: Duration) -> io::Result<Self> {
        let local = hub.connect(port, timeout)?;
        Ok(VsockStream {
            hub,
            local,
            read_timeout: None,
            write_deadline: None,
        })
    }

    /// Opens without waiting for the guest to accept (see [`Hub::open`]).
    pub(crate) fn open(hub: Arc<Hub>, port: u32) -> io::Result<Self> {
        let local = hub.open(port)?;
        Ok(VsockStream {
            hub,
            local,
            read_timeout: None,
            write_deadline: None,
        })
    }

    /// The host-side port of this connection.
    pub fn local_port(&self) -> u32 {
        self.local
    }

    /// `None` blocks until data arrives or the connection ends.
    pub fn set_read_timeout(&mut self, timeout: Option<Duration>) {
        self.read_timeout = timeout;
    }

    /// Writes that cannot queue their data by `deadline` fail with `TimedOut` (`None`:
    /// they wait for the guest as long as it takes).
    pub fn set_write_deadline(&mut self, deadline: Option<Instant>) {
        self.write_deadline = deadline;
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.hub.read(self.local, buf, self.read_timeout)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.hub.write(self.local, buf, self.write_deadline)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for VsockStream {
    fn drop(&mut self) {
        self.hub.close(self.local);
    }
}
