//! The frame protocol on [`crate::layout::GUEST_FRAME_PORT`]: versioned, length-prefixed
//! frames over one vsock stream.
//!
//! A frame is an 8-byte header (`version: u8`, `kind: u8`, `reserved: u16 = 0`,
//! `len: u32`, little-endian) followed by `len` payload bytes. A request gets exactly one
//! reply frame; a malformed request gets an [`Kind::Error`] frame and the stream is closed,
//! since after a bad header the two sides no longer agree where frames begin.

use alloc::vec::Vec;

/// Protocol version carried by every frame.
pub const VERSION: u8 = 1;
/// Size of a frame header.
pub const HEADER_LEN: usize = 8;
/// Largest frame payload either side accepts: a 6 MiB function payload (Lambda's
/// synchronous limit, [`crate::function::PAYLOAD_MAX`]) plus room for the request's other
/// fields.
pub const MAX_PAYLOAD: usize = 7 * 1024 * 1024;

/// What a frame is. Replies have their own kinds so a stray frame is never mistaken for one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    Ping = 1,
    Pong = 2,
    Echo = 3,
    EchoReply = 4,
    Info = 5,
    InfoReply = 6,
    Shutdown = 7,
    ShutdownAck = 8,
    /// Payload: `code: u16` then a UTF-8 message; see [`ErrorCode`].
    Error = 15,
    /// Payload: [`crate::function::LoadRequest`]; validates the module and runs its init.
    Load = 16,
    /// Payload: [`crate::function::Outcome`].
    LoadReply = 17,
    /// Payload: [`crate::function::InvokeRequest`].
    Invoke = 18,
    /// Payload: [`crate::function::Outcome`].
    InvokeReply = 19,
    /// Guest → host, any number before a reply: a chunk of the function's standard error.
    Log = 20,
    /// Test only (boot flag `TEST_FRAMES`): payload `[0]` executes `ud2`, `[1]` touches an
    /// unmapped page, `[2]` recurses into the stack's guard page.
    TestFault = 0x70,
    /// Test only: spin forever in ring 3 without replying.
    TestSpin = 0x71,
    /// Test only: payload `n` × (`leaf: u32`, `subleaf: u32`); the guest executes CPUID
    /// for each and answers [`Kind::TestCpuidReply`].
    TestCpuid = 0x72,
    /// Payload `n` × (`eax`, `ebx`, `ecx`, `edx`: `u32`), in the order asked.
    TestCpuidReply = 0x73,
}

impl Kind {
    pub fn from_u8(v: u8) -> Option<Kind> {
        use Kind::*;
        [
            Ping,
            Pong,
            Echo,
            EchoReply,
            Info,
            InfoReply,
            Shutdown,
            ShutdownAck,
            Error,
            Load,
            LoadReply,
            Invoke,
            InvokeReply,
            Log,
            TestFault,
            TestSpin,
            TestCpuid,
            TestCpuidReply,
        ]
        .into_iter()
        .find(|k| *k as u8 == v)
    }
}

/// Codes carried by [`Kind::Error`] frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// The header was malformed (bad version, reserved bits, oversized length).
    Malformed = 1,
    /// The kind is unknown or not a request.
    UnknownKind = 2,
    /// The request is valid but not allowed here (e.g. test frames without the boot flag).
    NotAllowed = 3,
    /// The guest ran out of memory for this request.
    OutOfMemory = 4,
}

/// A parsed frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    /// Raw kind byte; unknown kinds are the application's to answer, not the decoder's.
    pub kind: u8,
    pub len: u32,
}

/// Why a byte stream is not a valid frame stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FrameError {
    BadVersion(u8),
    ReservedBitsSet,
    TooLarge(u32),
}

impl core::fmt::Display for FrameError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            FrameError::BadVersion(v) => write!(f, "unsupported frame version {v}"),
            FrameError::ReservedBitsSet => f.write_str("reserved header bits set"),
            FrameError::TooLarge(n) => {
                write!(
                    f,
                    "payload of {n} bytes exceeds the {MAX_PAYLOAD}-byte limit"
                )
            }
        }
    }
}

impl core::error::Error for FrameError {}

impl Header {
    pub fn encode(kind: u8, len: u32) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = VERSION;
        out[1] = kind;
        out[4..].copy_from_slice(&len.to_le_bytes());
        out
    }

    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Result<Header, FrameError> {
        if bytes[0] != VERSION {
            return Err(FrameError::BadVersion(bytes[0]));
        }
        if bytes[2] != 0 || bytes[3] != 0 {
            return Err(FrameError::ReservedBitsSet);
        }
        let len = u32::from_le_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
        if len as usize > MAX_PAYLOAD {
            return Err(FrameError::TooLarge(len));
        }
        Ok(Header {
            kind: bytes[1],
            len,
        })
    }
}

/// A whole frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub kind: u8,
    pub payload: Vec<u8>,
}

impl Frame {
    pub fn new(kind: Kind, payload: Vec<u8>) -> Frame {
        Frame {
            kind: kind as u8,
            payload,
        }
    }

    /// An error frame with a code and a human-readable message.
    pub fn error(code: ErrorCode, message: &str) -> Frame {
        let mut payload = Vec::with_capacity(2 + message.len());
        payload.extend_from_slice(&(code as u16).to_le_bytes());
        payload.extend_from_slice(message.as_bytes());
        Frame::new(Kind::Error, payload)
    }

    /// Splits an error frame's payload into its code and message.
    pub fn error_parts(&self) -> Option<(u16, &str)> {
        if self.kind != Kind::Error as u8 || self.payload.len() < 2 {
            return None;
        }
        let code = u16::from_le_bytes([self.payload[0], self.payload[1]]);
        let message = core::str::from_utf8(&self.payload[2..]).ok()?;
        Some((code, message))
    }

    /// Header for this frame. Callers keep payloads within [`MAX_PAYLOAD`].
    pub fn header(&self) -> [u8; HEADER_LEN] {
        Header::encode(self.kind, self.payload.len() as u32)
    }

    /// Header and payload in one buffer.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.payload.len());
        out.extend_from_slice(&self.header());
        out.extend_from_slice(&self.payload);
        out
    }
}

/// Reassembles frames from a byte stream that arrives in arbitrary pieces.
///
/// Each payload byte is copied exactly once, into a buffer sized from the (checked) header.
/// After an error the decoder stays poisoned: the stream cannot be resynchronised.
#[derive(Default)]
pub struct Decoder {
    header: [u8; HEADER_LEN],
    header_filled: usize,
    body: Option<(u8, usize, Vec<u8>)>,
    poisoned: Option<FrameError>,
}

impl Decoder {
    pub fn new() -> Decoder {
        Decoder::default()
    }

    /// Consumes bytes from the front of `input` until one frame is complete (returned) or
    /// `input` is empty (`Ok(None)`). Call again with the rest of `input` for more frames.
    pub fn push(&mut self, input: &mut &[u8]) -> Result<Option<Frame>, FrameError> {
        if let Some(err) = self.poisoned {
            return Err(err);
        }
        loop {
            if let Some((_, len, body)) = &mut self.body {
                let take = (*len - body.len()).min(input.len());
                body.extend_from_slice(&input[..take]);
                *input = &input[take..];
                if body.len() < *len {
                    return Ok(None);
                }
                let (kind, _, payload) = self.body.take().expect("checked above");
                return Ok(Some(Frame { kind, payload }));
            }
            if input.is_empty() {
                return Ok(None);
            }
            let take = (HEADER_LEN - self.header_filled).min(input.len());
            self.header[self.header_filled..self.header_filled + take]
                .copy_from_slice(&input[..take]);
            self.header_filled += take;
            *input = &input[take..];
            if self.header_filled < HEADER_LEN {
                return Ok(None);
            }
            self.header_filled = 0;
            let header = Header::decode(&self.header).inspect_err(|e| self.poisoned = Some(*e))?;
            self.body = Some((header.kind, header.len as usize, Vec::new()));
            self.reserve_body()?;
        }
    }

    /// Allocates the payload buffer, reporting failure instead of aborting (the guest's heap
    /// is small and a hostile peer may ask for the maximum).
    fn reserve_body(&mut self) -> Result<(), FrameError> {
        let Some((_, len, body)) = &mut self.body else {
            return Ok(());
        };
        if body.try_reserve_exact(*len).is_err() {
            let err = FrameError::TooLarge(*len as u32);
            self.poisoned = Some(err);
            return Err(err);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn decode_all(bytes: &[u8], piece: usize) -> Result<Vec<Frame>, FrameError> {
        let mut dec = Decoder::new();
        let mut frames = Vec::new();
        for chunk in bytes.chunks(piece.max(1)) {
            let mut rest = chunk;
            while !rest.is_empty() {
                if let Some(f) = dec.push(&mut rest)? {
                    frames.push(f);
                }
            }
        }
        Ok(frames)
    }

    #[test]
    fn frames_survive_any_split() {
        let frames = [
            Frame::new(Kind::Ping, vec![]),
            Frame::new(Kind::Echo, (0..=255u8).cycle().take(10_000).collect()),
            Frame::new(Kind::Info, vec![]),
        ];
        let stream: Vec<u8> = frames.iter().flat_map(|f| f.encode()).collect();
        for piece in [1, 2, 7, 8, 9, 4096, stream.len()] {
            assert_eq!(decode_all(&stream, piece).unwrap(), frames, "piece {piece}");
        }
    }

    #[test]
    fn max_payload_is_accepted_and_one_more_byte_is_not() {
        let ok = Header::encode(Kind::Echo as u8, MAX_PAYLOAD as u32);
        assert_eq!(Header::decode(&ok).unwrap().len as usize, MAX_PAYLOAD);
        let big = Header::encode(Kind::Echo as u8, MAX_PAYLOAD as u32 + 1);
        assert_eq!(
            Header::decode(&big),
            Err(FrameError::TooLarge(MAX_PAYLOAD as u32 + 1))
        );
        assert_eq!(
            decode_all(&big, 3),
            Err(FrameError::TooLarge(MAX_PAYLOAD as u32 + 1))
        );
    }

    #[test]
    fn truncated_input_yields_no_frame() {
        let f = Frame::new(Kind::Echo, vec![1, 2, 3, 4]).encode();
        for cut in 0..f.len() {
            assert!(decode_all(&f[..cut], 1).unwrap().is_empty(), "cut {cut}");
        }
        let mut dec = Decoder::new();
        let mut part = &f[..5];
        assert_eq!(dec.push(&mut part), Ok(None));
        let mut rest = &f[5..];
        assert_eq!(
            dec.push(&mut rest),
            Ok(Some(Frame::new(Kind::Echo, vec![1, 2, 3, 4])))
        );
    }

    #[test]
    fn garbage_is_rejected_and_poisons_the_stream() {
        let mut dec = Decoder::new();
        let mut garbage: &[u8] = b"GET / HTTP/1.1\r\n";
        assert_eq!(dec.push(&mut garbage), Err(FrameError::BadVersion(b'G')));
        let mut good: &[u8] = &Frame::new(Kind::Ping, vec![]).encode();
        assert_eq!(dec.push(&mut good), Err(FrameError::BadVersion(b'G')));

        let mut reserved = Header::encode(Kind::Ping as u8, 0);
        reserved[2] = 1;
        assert_eq!(
            Decoder::new().push(&mut &reserved[..]),
            Err(FrameError::ReservedBitsSet)
        );
    }

    #[test]
    fn kinds_round_trip_and_unknown_kinds_are_none() {
        for v in 0..=255u8 {
            if let Some(k) = Kind::from_u8(v) {
                assert_eq!(k as u8, v);
            }
        }
        assert_eq!(Kind::from_u8(0), None);
        assert_eq!(Kind::from_u8(200), None);
    }

    #[test]
    fn error_frames_carry_code_and_message() {
        let f = Frame::error(ErrorCode::Malformed, "bad header");
        assert_eq!(f.error_parts(), Some((1, "bad header")));
        assert_eq!(Frame::new(Kind::Error, vec![1]).error_parts(), None);
        assert_eq!(Frame::new(Kind::Pong, vec![0, 0]).error_parts(), None);
    }
}
