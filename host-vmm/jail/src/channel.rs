//! Messages between processes: one per `SOCK_SEQPACKET` datagram (message boundaries kept
//! by the kernel): a JSON header, then raw bytes (a payload, a response, a module), with
//! file descriptors passed alongside (`SCM_RIGHTS`). Whatever the other side sends is
//! checked: a message over [`MAX_MESSAGE`], a header that does not parse or lengths that
//! do not add up are errors, never a panic.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::time::Duration;

use nix::sys::socket::sockopt::{RcvBufForce, ReceiveTimeout, SndBufForce};
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, shutdown, socketpair, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, Shutdown, SockFlag, SockType,
};
use nix::sys::time::TimeVal;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest message either side accepts: a 6 MiB payload and a module frame fit.
pub const MAX_MESSAGE: usize = 16 << 20;

/// Each end's socket buffers: a message must fit in them whole. Forced (root only) when
/// the pair is made, so the unprivileged VM process keeps them.
const BUFFER: usize = MAX_MESSAGE + (1 << 20);

/// Most descriptors passed with one message.
const MAX_FDS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the other side closed the channel")]
    Closed,
    #[error("{0}")]
    Io(#[from] nix::Error),
    #[error("malformed message: {0}")]
    Malformed(String),
}

/// One end of a channel.
#[derive(Debug)]
pub struct Channel(OwnedFd);

impl Channel {
    /// A connected pair (close-on-exec).
    pub fn pair() -> Result<(Channel, Channel), ChannelError> {
        let (a, b) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )?;
        for end in [&a, &b] {
            // Without root this stays at the system's maximum: only small messages pass.
            let _ = setsockopt(end, SndBufForce, &BUFFER);
            let _ = setsockopt(end, RcvBufForce, &BUFFER);
        }
        Ok((Channel(a), Channel(b)))
    }

    /// The end whose descriptor is `fd` (inherited, or received).
    pub fn from_fd(fd: OwnedFd) -> Channel {
        Channel(fd)
    }

    pub fn fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }

    pub fn into_fd(self) -> OwnedFd {
        self.0
    }

    /// Ends the conversation both ways: the other side reads end-of-file, and so does any
    /// thread of this process blocked receiving on this end.
    pub fn shutdown(&self) {
        let _ = shutdown(self.0.as_raw_fd(), Shutdown::Both);
    }

    /// Bounds how long [`Channel::recv`] waits (`None`: for ever).
    pub fn set_timeout(&self, timeout: Option<Duration>) -> Result<(), ChannelError> {
        let value = TimeVal::from(libc::timeval {
            tv_sec: timeout.map_or(0, |t| t.as_secs() as libc::time_t),
            tv_usec: timeout.map_or(0, |t| t.subsec_micros() as libc::suseconds_t),
        });
        setsockopt(&self.0, ReceiveTimeout, &value)?;
        Ok(())
    }

    /// Sends `message` with `fds`.
    pub fn send<T: Serialize>(&self, message: &T, fds: &[RawFd]) -> Result<(), ChannelError> {
        self.send_with(message, &[], fds)
    }

    /// Sends `message`, the bytes `blob` after it, and `fds`.
    pub fn send_with<T: Serialize>(
        &self,
        message: &T,
        blob: &[u8],
        fds: &[RawFd],
    ) -> Result<(), ChannelError> {
        let header =
            serde_json::to_vec(message).map_err(|e| ChannelError::Malformed(e.to_string()))?;
        let total = 4 + header.len() + blob.len();
        if total > MAX_MESSAGE {
            return Err(ChannelError::Malformed(format!(
                "{total} bytes, over the {MAX_MESSAGE}-byte limit"
            )));
        }
        let length = (header.len() as u32).to_le_bytes();
        let rights = [ControlMessage::ScmRights(fds)];
        let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &[
                IoSlice::new(&length),
                IoSlice::new(&header),
                IoSlice::new(blob),
            ],
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Receives one message and the descriptors that came with it.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let (message, _, fds) = self.recv_with()?;
        Ok((message, fds))
    }

    /// Receives one message, the bytes after it, and the descriptors that came with it.
    pub fn recv_with<T: DeserializeOwned>(
        &self,
    ) -> Result<(T, Vec<u8>, Vec<OwnedFd>), ChannelError> {
        // The datagram's size first, without taking it off the socket.
        let size = nix::sys::socket::recv(
            self.0.as_raw_fd(),
            &mut [],
            MsgFlags::MSG_PEEK | MsgFlags::MSG_TRUNC,
        )?;
        if size == 0 {
            // Either end-of-file or an empty datagram: read it to tell which.
            self.take(&mut [0u8; 1])?;
            return Err(ChannelError::Closed);
        }
        if size > MAX_MESSAGE {
            self.take(&mut [0u8; 1])?;
            return Err(ChannelError::Malformed(format!(
                "{size} bytes, over the {MAX_MESSAGE}-byte limit"
            )));
        }
        let mut buffer = vec![0u8; size];
        let (len, fds) = self.take(&mut buffer)?;
        if len != size {
            return Err(ChannelError::Malformed("the message changed size".into()));
        }
        let header_len = buffer
            .get(..4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")) as usize)
            .filter(|n| 4 + n <= len)
            .ok_or_else(|| ChannelError::Malformed("a header longer than its message".into()))?;
        let message = serde_json::from_slice(&buffer[4..4 + header_len])
            .map_err(|e| ChannelError::Malformed(e.to_string()))?;
        buffer.drain(..4 + header_len);
        Ok((message, buffer, fds))
    }

    /// Takes the next datagram into `buffer`: its length and descriptors.
    fn take(&self, buffer: &mut [u8]) -> Result<(usize, Vec<OwnedFd>), ChannelError> {
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let mut iov = [IoSliceMut::new(buffer)];
        let message = recvmsg::<()>(
            self.0.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        )?;
        let mut fds = Vec::new();
        for control in message.cmsgs()? {
            if let ControlMessageOwned::ScmRights(received) = control {
                // SAFETY: the kernel just installed these descriptors for this process;
                // nothing else owns them.
                fds.extend(
                    received
                        .into_iter()
                        .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                );
            }
        }
        if message.flags.intersects(MsgFlags::MSG_CTRUNC) {
            return Err(ChannelError::Malformed("too many descriptors".into()));
        }
        Ok((message.bytes, fds))
    }
}
