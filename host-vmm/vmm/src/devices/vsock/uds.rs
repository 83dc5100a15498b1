//! Firecracker-style hybrid vsock: a Unix socket on the host where a client writes
//! `CONNECT <port>\n`, gets `OK <host port>\n`, and then talks to that guest port as if it
//! were a plain stream. Lets tools and tests reach a guest without linking this crate.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Shutdown;
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use super::hub::Hub;
use super::stream::VsockStream;

/// Longest accepted `CONNECT` line.
const MAX_LINE: u64 = 64;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

type Clients = Arc<Mutex<Vec<(UnixStream, JoinHandle<()>)>>>;

pub struct UdsListener {
    path: PathBuf,
    listener: UnixListener,
    accept_thread: Option<JoinHandle<()>>,
    clients: Clients,
}

impl UdsListener {
    pub fn start(path: &Path, hub: Arc<Hub>, vm_id: &str) -> io::Result<UdsListener> {
        let listener = UnixListener::bind(path)?;
        let clients: Clients = Arc::default();
        let accept_thread = {
            let listener = listener.try_clone()?;
            let clients = clients.clone();
            std::thread::Builder::new()
                .name(format!("vsock-uds-{vm_id}"))
                .spawn(move || accept_loop(listener, hub, clients))?
        };
        Ok(UdsListener {
            path: path.to_path_buf(),
            listener,
            accept_thread: Some(accept_thread),
            clients,
        })
    }
}

fn accept_loop(listener: UnixListener, hub: Arc<Hub>, clients: Clients) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else {
            // Shutting the listener down makes accept fail: the VM is going away.
            return;
        };
        let Ok(clone) = conn.try_clone() else {
            continue;
        };
        let hub = hub.clone();
        let Ok(thread) = std::thread::Builder::new()
            .name("vsock-uds-conn".into())
            .spawn(move || {
                if let Err(e) = serve(&conn, hub) {
                    log::debug!("hybrid vsock client: {e}");
                }
                // Whatever ended the session (an ERROR reply included), the client sees EOF.
                let _ = conn.shutdown(Shutdown::Both);
            })
        else {
            continue;
        };
        let mut clients = clients.lock().unwrap();
        clients.retain(|(_, t)| !t.is_finished());
        clients.push((clone, thread));
    }
}

/// Handshake, then copy bytes both ways until either side closes.
fn serve(socket: &UnixStream, hub: Arc<Hub>) -> io::Result<()> {
    let mut reader = BufReader::new(socket.try_clone()?);
    let mut line = String::new();
    reader.by_ref().take(MAX_LINE).read_line(&mut line)?;
    let port = line
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.trim_end().parse::<u32>().ok());
    let Some(port) = port else {
        let _ = (&*socket).write_all(b"ERROR expected CONNECT <port>\n");
        return Ok(());
    };
    let mut stream = match VsockStream::connect(hub.clone(), port, CONNECT_TIMEOUT) {
        Ok(s) => s,
        Err(e) => {
            let _ = (&*socket).write_all(format!("ERROR {e}\n").as_bytes());
            return Ok(());
        }
    };
    (&*socket).write_all(format!("OK {}\n", stream.local_port()).as_bytes())?;

    let local = stream.local_port();
    let to_client = {
        let mut socket = socket.try_clone()?;
        let hub = hub.clone();
        std::thread::Builder::new()
            .name("vsock-uds-pump".into())
            .spawn(move || {
                let mut buf = vec![0u8; 64 * 1024];
                while let Ok(n @ 1..) = hub.read(local, &mut buf, None) {
                    if socket.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
                let _ = socket.shutdown(Shutdown::Both);
            })?
    };
    // Bytes the handshake reader already buffered belong to the stream.
    stream.write_all(reader.buffer())?;
    let mut socket_reader = reader.into_inner();
    let _ = io::copy(&mut socket_reader, &mut stream);
    drop(stream);
    let _ = socket.shutdown(Shutdown::Both);
    let _ = to_client.join();
    Ok(())
}

impl Drop for UdsListener {
    fn drop(&mut self) {
        // SAFETY: shutting down our own listening socket only wakes the blocked accept().
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accept_thread.take() {
            let _ = t.join();
        }
        let clients = std::mem::take(&mut *self.clients.lock().unwrap());
        for (socket, thread) in clients {
            let _ = socket.shutdown(Shutdown::Both);
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
