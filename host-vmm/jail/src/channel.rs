//! Messages between processes: one JSON value per `SOCK_SEQPACKET` datagram (message
//! boundaries kept by the kernel), with file descriptors passed alongside (`SCM_RIGHTS`).
//! Whatever the other side sends is checked: a message over [`MAX_MESSAGE`] or that does
//! not parse is an error, never a panic.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use std::time::Duration;

use nix::sys::socket::sockopt::ReceiveTimeout;
use nix::sys::socket::{
    recvmsg, sendmsg, setsockopt, shutdown, socketpair, AddressFamily, ControlMessage,
    ControlMessageOwned, MsgFlags, Shutdown, SockFlag, SockType,
};
use nix::sys::time::TimeVal;
use serde::de::DeserializeOwned;
use serde::Serialize;

/// The largest message either side accepts.
pub const MAX_MESSAGE: usize = 64 << 10;

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
        let bytes =
            serde_json::to_vec(message).map_err(|e| ChannelError::Malformed(e.to_string()))?;
        if bytes.len() > MAX_MESSAGE {
            return Err(ChannelError::Malformed(format!(
                "{} bytes, over the {MAX_MESSAGE}-byte limit",
                bytes.len()
            )));
        }
        let rights = [ControlMessage::ScmRights(fds)];
        let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
        sendmsg::<()>(
            self.0.as_raw_fd(),
            &[IoSlice::new(&bytes)],
            control,
            MsgFlags::MSG_NOSIGNAL,
            None,
        )?;
        Ok(())
    }

    /// Receives one message and the descriptors that came with it.
    pub fn recv<T: DeserializeOwned>(&self) -> Result<(T, Vec<OwnedFd>), ChannelError> {
        let mut buffer = vec![0u8; MAX_MESSAGE + 1];
        let mut space = nix::cmsg_space!([RawFd; MAX_FDS]);
        let (len, truncated, fds) = {
            let mut iov = [IoSliceMut::new(&mut buffer)];
            let message = recvmsg::<()>(
                self.0.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_CMSG_CLOEXEC,
            )?;
            let mut fds = Vec::new();
            for control in message.cmsgs()? {
                if let ControlMessageOwned::ScmRights(received) = control {
                    // SAFETY: the kernel just installed these descriptors for this
                    // process; nothing else owns them.
                    fds.extend(
                        received
                            .into_iter()
                            .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
                    );
                }
            }
            let truncated = message
                .flags
                .intersects(MsgFlags::MSG_TRUNC | MsgFlags::MSG_CTRUNC);
            (message.bytes, truncated, fds)
        };
        if len == 0 {
            return Err(ChannelError::Closed);
        }
        if truncated || len > MAX_MESSAGE {
            return Err(ChannelError::Malformed(
                "a message or its descriptors over the limit".into(),
            ));
        }
        let message = serde_json::from_slice(&buffer[..len])
            .map_err(|e| ChannelError::Malformed(e.to_string()))?;
        Ok((message, fds))
    }
}
