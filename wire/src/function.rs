//! Payloads of the function frames: load a module and run its init phase, invoke it, and
//! the replies. Encoded as fixed fields plus length-prefixed byte strings; every decoder
//! checks every length against what is left.

use alloc::string::String;
use alloc::vec::Vec;

/// Largest event or response of one invocation: 6 MiB, like Lambda's synchronous limit.
pub const PAYLOAD_MAX: usize = 6 * 1024 * 1024;

/// Most bytes of log tail a reply carries, like Lambda's `LogType: Tail`.
pub const LOG_TAIL: usize = 4096;

/// How a load or an invocation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    Success = 0,
    /// Non-zero exit or a trap; the message says which.
    FunctionError = 1,
    /// `_initialize` (or instantiation) failed.
    InitError = 2,
    /// The function asked for more memory than its environment has.
    OutOfMemory = 3,
    /// The bytes are not a valid module, or it imports something we do not provide.
    InvalidModule = 4,
}

impl Status {
    pub fn from_u8(v: u8) -> Option<Status> {
        use Status::*;
        [
            Success,
            FunctionError,
            InitError,
            OutOfMemory,
            InvalidModule,
        ]
        .into_iter()
        .find(|s| *s as u8 == v)
    }
}

/// Whether a module is instantiated once per environment or once per invocation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ModuleKind {
    /// `_initialize` + handler export: state persists across invocations.
    Reactor = 1,
    /// `_start`: a fresh instance per invocation.
    Command = 2,
}

/// `Kind::Load`: the module and everything fixed for the environment's life.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadRequest {
    /// Export called per invocation of a reactor (default `handle`).
    pub handler: String,
    pub env: Vec<(String, String)>,
    /// Seeds the function's `random_get`; fresh per environment.
    pub seed: [u8; 32],
    /// Host wall clock when the request was sent (ns since the Unix epoch).
    pub now_unix_ns: u64,
    /// Cap on the module's linear memory in bytes.
    pub memory_limit: u64,
    pub module: Vec<u8>,
}

/// `Kind::Invoke`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvokeRequest {
    pub now_unix_ns: u64,
    /// Reseeds the function's `random_get`: environments started from one snapshot must not
    /// share a random sequence.
    pub seed: [u8; 32],
    /// Variables added for this invocation (e.g. fresh role credentials).
    pub env: Vec<(String, String)>,
    pub payload: Vec<u8>,
}

/// `Kind::LoadReply` and `Kind::InvokeReply`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Outcome {
    pub status: Status,
    /// For loads: the module kind; for invocations: 0.
    pub module_kind: u8,
    /// Guest-measured run time of the init phase or the invocation.
    pub duration_ns: u64,
    /// Largest linear memory the module has had, in bytes.
    pub memory_used: u64,
    pub error: String,
    /// Standard output of an invocation (the response).
    pub output: Vec<u8>,
    /// The last [`LOG_TAIL`] bytes of standard error.
    pub log_tail: Vec<u8>,
}

/// Why a payload did not decode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecodeError;

impl core::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("malformed function payload")
    }
}

impl core::error::Error for DecodeError {}

#[derive(Default)]
struct Out(Vec<u8>);

impl Out {
    fn u8(&mut self, v: u8) {
        self.0.push(v);
    }
    fn u64(&mut self, v: u64) {
        self.0.extend_from_slice(&v.to_le_bytes());
    }
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(&(b.len() as u32).to_le_bytes());
        self.0.extend_from_slice(b);
    }
    fn env(&mut self, env: &[(String, String)]) {
        self.0.extend_from_slice(&(env.len() as u32).to_le_bytes());
        for (k, v) in env {
            self.bytes(k.as_bytes());
            self.bytes(v.as_bytes());
        }
    }
}

struct In<'a>(&'a [u8]);

impl<'a> In<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        if n > self.0.len() {
            return Err(DecodeError);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let n = self.u32()? as usize;
        self.take(n)
    }
    fn string(&mut self) -> Result<String, DecodeError> {
        core::str::from_utf8(self.bytes()?)
            .map(String::from)
            .map_err(|_| DecodeError)
    }
    fn env(&mut self) -> Result<Vec<(String, String)>, DecodeError> {
        let n = self.u32()? as usize;
        // Each entry takes at least 8 bytes: refuse counts the input cannot hold.
        if n > self.0.len() / 8 {
            return Err(DecodeError);
        }
        (0..n)
            .map(|_| Ok((self.string()?, self.string()?)))
            .collect()
    }
    fn end(self) -> Result<(), DecodeError> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(DecodeError)
        }
    }
}

impl LoadRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out::default();
        o.bytes(self.handler.as_bytes());
        o.env(&self.env);
        o.0.extend_from_slice(&self.seed);
        o.u64(self.now_unix_ns);
        o.u64(self.memory_limit);
        o.bytes(&self.module);
        o.0
    }

    pub fn decode(bytes: &[u8]) -> Result<LoadRequest, DecodeError> {
        let mut i = In(bytes);
        let req = LoadRequest {
            handler: i.string()?,
            env: i.env()?,
            seed: i.take(32)?.try_into().unwrap(),
            now_unix_ns: i.u64()?,
            memory_limit: i.u64()?,
            module: i.bytes()?.to_vec(),
        };
        i.end()?;
        Ok(req)
    }
}

impl InvokeRequest {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out::default();
        o.u64(self.now_unix_ns);
        o.0.extend_from_slice(&self.seed);
        o.env(&self.env);
        o.bytes(&self.payload);
        o.0
    }

    pub fn decode(bytes: &[u8]) -> Result<InvokeRequest, DecodeError> {
        let mut i = In(bytes);
        let req = InvokeRequest {
            now_unix_ns: i.u64()?,
            seed: i.take(32)?.try_into().unwrap(),
            env: i.env()?,
            payload: i.bytes()?.to_vec(),
        };
        i.end()?;
        Ok(req)
    }
}

impl Outcome {
    pub fn encode(&self) -> Vec<u8> {
        let mut o = Out::default();
        o.u8(self.status as u8);
        o.u8(self.module_kind);
        o.u64(self.duration_ns);
        o.u64(self.memory_used);
        o.bytes(self.error.as_bytes());
        o.bytes(&self.output);
        o.bytes(&self.log_tail);
        o.0
    }

    pub fn decode(bytes: &[u8]) -> Result<Outcome, DecodeError> {
        let mut i = In(bytes);
        let out = Outcome {
            status: Status::from_u8(i.u8()?).ok_or(DecodeError)?,
            module_kind: i.u8()?,
            duration_ns: i.u64()?,
            memory_used: i.u64()?,
            error: i.string()?,
            output: i.bytes()?.to_vec(),
            log_tail: i.bytes()?.to_vec(),
        };
        i.end()?;
        if out.log_tail.len() > LOG_TAIL {
            return Err(DecodeError);
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec;

    fn load() -> LoadRequest {
        LoadRequest {
            handler: "handle".into(),
            env: vec![("A".into(), "1".into()), ("EMPTY".into(), "".into())],
            seed: [9; 32],
            now_unix_ns: 123,
            memory_limit: 1 << 20,
            module: vec![0, 97, 115, 109],
        }
    }

    #[test]
    fn payloads_round_trip() {
        assert_eq!(LoadRequest::decode(&load().encode()), Ok(load()));
        let inv = InvokeRequest {
            now_unix_ns: 5,
            seed: [3; 32],
            env: vec![],
            payload: b"{}".to_vec(),
        };
        assert_eq!(InvokeRequest::decode(&inv.encode()), Ok(inv));
        let out = Outcome {
            status: Status::FunctionError,
            module_kind: 0,
            duration_ns: 7,
            memory_used: 65536,
            error: "trap: unreachable".into(),
            output: vec![],
            log_tail: b"log".to_vec(),
        };
        assert_eq!(Outcome::decode(&out.encode()), Ok(out));
    }

    #[test]
    fn truncated_trailing_or_lying_input_is_refused() {
        let bytes = load().encode();
        for cut in 0..bytes.len() {
            assert_eq!(
                LoadRequest::decode(&bytes[..cut]),
                Err(DecodeError),
                "cut {cut}"
            );
        }
        let mut long = bytes.clone();
        long.push(0);
        assert_eq!(LoadRequest::decode(&long), Err(DecodeError));
        // An env count of 2^32-1 with no entries behind it.
        let mut lie = Vec::new();
        lie.extend_from_slice(&5u64.to_le_bytes());
        lie.extend_from_slice(&[0; 32]);
        lie.extend_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(InvokeRequest::decode(&lie), Err(DecodeError));
        let mut bad_utf8 = Out::default();
        bad_utf8.bytes(&[0xff]);
        assert_eq!(In(&bad_utf8.0).string(), Err(DecodeError));
    }
}
