//! Frame-level client for guest-init's port: one request, one reply.
//! Generic over the stream so the same code drives an in-process vsock stream and the
//! hybrid Unix socket.

use std::io::{self, Read, Write};
use std::time::Duration;

use ember_wire::frame::{Frame, FrameError, Header, Kind, HEADER_LEN};
use ember_wire::info::GuestInfo;
use ember_wire::layout::GUEST_FRAME_PORT;

use crate::devices::vsock::stream::VsockStream;
use crate::vm::Vm;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("vsock: {0}")]
    Io(#[from] io::Error),
    #[error("malformed reply: {0}")]
    Frame(#[from] FrameError),
    #[error("guest replied with error {code}: {message}")]
    Guest { code: u16, message: String },
    #[error("unexpected reply kind {0}")]
    Unexpected(u8),
}

pub struct GuestClient<S = VsockStream> {
    stream: S,
}

/// Frames up to this size are sent in one write (one vsock packet when they fit).
const COALESCE: usize = 16 * 1024;

impl GuestClient<VsockStream> {
    /// Connects to guest-init's frame port.
    pub fn connect(vm: &Vm, timeout: Duration) -> Result<Self, ClientError> {
        Ok(GuestClient::new(vm.connect(GUEST_FRAME_PORT, timeout)?))
    }

    /// Like [`GuestClient::connect`], but without waiting for the handshake (see
    /// [`Vm::open`]).
    pub fn open(vm: &Vm) -> Result<Self, ClientError> {
        Ok(GuestClient::new(vm.open(GUEST_FRAME_PORT)?))
    }
}

impl<S: Read + Write> GuestClient<S> {
    pub fn new(stream: S) -> Self {
        GuestClient { stream }
    }

    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    pub fn send(&mut self, kind: u8, payload: &[u8]) -> Result<(), ClientError> {
        let header = Header::encode(kind, payload.len() as u32);
        if payload.len() <= COALESCE {
            let mut buf = Vec::with_capacity(HEADER_LEN + payload.len());
            buf.extend_from_slice(&header);
            buf.extend_from_slice(payload);
            self.stream.write_all(&buf)?;
        } else {
            self.stream.write_all(&header)?;
            self.stream.write_all(payload)?;
        }
        Ok(())
    }

    pub fn receive(&mut self) -> Result<Frame, ClientError> {
        let mut raw = [0u8; HEADER_LEN];
        self.stream.read_exact(&mut raw)?;
        let header = Header::decode(&raw)?;
        let mut payload = vec![0u8; header.len as usize];
        self.stream.read_exact(&mut payload)?;
        let frame = Frame {
            kind: header.kind,
            payload,
        };
        if let Some((code, message)) = frame.error_parts() {
            return Err(ClientError::Guest {
                code,
                message: message.to_string(),
            });
        }
        Ok(frame)
    }

    /// Sends a request and checks the reply's kind.
    pub fn request(
        &mut self,
        kind: Kind,
        payload: &[u8],
        reply: Kind,
    ) -> Result<Frame, ClientError> {
        self.send(kind as u8, payload)?;
        let frame = self.receive()?;
        if frame.kind != reply as u8 {
            return Err(ClientError::Unexpected(frame.kind));
        }
        Ok(frame)
    }

    pub fn ping(&mut self) -> Result<(), ClientError> {
        self.request(Kind::Ping, &[], Kind::Pong).map(drop)
    }

    pub fn echo(&mut self, payload: &[u8]) -> Result<Vec<u8>, ClientError> {
        Ok(self.request(Kind::Echo, payload, Kind::EchoReply)?.payload)
    }

    pub fn info(&mut self) -> Result<GuestInfo, ClientError> {
        let frame = self.request(Kind::Info, &[], Kind::InfoReply)?;
        GuestInfo::decode(&frame.payload).ok_or(ClientError::Unexpected(frame.kind))
    }

    /// Asks the guest to power off; it acknowledges first.
    pub fn shutdown(&mut self) -> Result<(), ClientError> {
        self.request(Kind::Shutdown, &[], Kind::ShutdownAck)
            .map(drop)
    }
}
