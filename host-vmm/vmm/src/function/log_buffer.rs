//! One invocation's log as it streams in from the guest, bounded: past [`LOG_MAX`] bytes
//! the start and the end are kept, with a marker where the middle was dropped, since the
//! first lines (what the function set out to do) and the last (how it ended) say the most.

use std::collections::VecDeque;

/// The most log bytes kept per invocation (init output included).
pub const LOG_MAX: usize = 256 << 10;

/// Where the dropped middle of a long log was.
pub const TRUNCATED: &[u8] = b"\n[log truncated]\n";

/// The bounded log of one invocation.
#[derive(Debug, Default)]
pub struct LogBuffer {
    /// The first half of the budget, filled first.
    head: Vec<u8>,
    /// The latest bytes once `head` is full, at most the other half.
    tail: VecDeque<u8>,
    /// Bytes dropped between `head` and `tail`.
    dropped: usize,
}

impl LogBuffer {
    pub fn push(&mut self, mut bytes: &[u8]) {
        let half = LOG_MAX / 2;
        let room = half - self.head.len();
        let (first, rest) = bytes.split_at(room.min(bytes.len()));
        self.head.extend_from_slice(first);
        bytes = rest;
        let skip = bytes.len().saturating_sub(half);
        self.dropped += skip;
        self.tail.extend(&bytes[skip..]);
        let excess = self.tail.len().saturating_sub(half);
        self.dropped += excess;
        self.tail.drain(..excess);
    }

    /// The log: everything, or its start, the marker and its end.
    pub fn into_bytes(self) -> Vec<u8> {
        let mut out = self.head;
        if self.dropped > 0 {
            out.extend_from_slice(TRUNCATED);
        }
        out.extend(self.tail);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_short_logs_whole() {
        let mut log = LogBuffer::default();
        log.push(b"init\n");
        log.push(b"line 1\n");
        assert_eq!(log.into_bytes(), b"init\nline 1\n");
    }

    #[test]
    fn keeps_the_start_and_the_end_of_long_logs() {
        let mut log = LogBuffer::default();
        log.push(b"first\n");
        for i in 0..100_000u32 {
            log.push(format!("line {i}\n").as_bytes());
        }
        log.push(b"last\n");
        let bytes = log.into_bytes();
        assert_eq!(bytes.len(), LOG_MAX + TRUNCATED.len());
        assert!(bytes.starts_with(b"first\nline 0\n"));
        assert!(bytes.ends_with(b"line 99999\nlast\n"));
        let text = String::from_utf8_lossy(&bytes);
        assert_eq!(text.matches("[log truncated]").count(), 1);

        // One chunk larger than the whole budget.
        let mut log = LogBuffer::default();
        let mut big = vec![b'a'; LOG_MAX * 2];
        big.extend_from_slice(b"end");
        log.push(&big);
        let bytes = log.into_bytes();
        assert_eq!(bytes.len(), LOG_MAX + TRUNCATED.len());
        assert!(bytes.ends_with(b"aend"));
    }
}
