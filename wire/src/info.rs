//! Payload of [`crate::frame::Kind::InfoReply`]: what the guest reports about itself.

use alloc::string::String;
use alloc::vec::Vec;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestInfo {
    /// guest-init's crate version.
    pub version: String,
    /// Guest RAM in bytes as the guest sees it.
    pub mem_size: u64,
    /// Bytes of heap the guest manages.
    pub heap_size: u64,
    /// The privilege level the guest's code runs at (3 for guest-init).
    pub cpl: u8,
}

const FIXED: usize = 1 + 8 + 8;

impl GuestInfo {
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED + self.version.len());
        out.push(self.cpl);
        out.extend_from_slice(&self.mem_size.to_le_bytes());
        out.extend_from_slice(&self.heap_size.to_le_bytes());
        out.extend_from_slice(self.version.as_bytes());
        out
    }

    pub fn decode(bytes: &[u8]) -> Option<GuestInfo> {
        if bytes.len() < FIXED {
            return None;
        }
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap());
        Some(GuestInfo {
            cpl: bytes[0],
            mem_size: u64_at(1),
            heap_size: u64_at(9),
            version: String::from(core::str::from_utf8(&bytes[FIXED..]).ok()?),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_short_or_non_utf8() {
        let info = GuestInfo {
            version: "0.1.0".into(),
            mem_size: 16 << 20,
            heap_size: 12 << 20,
            cpl: 3,
        };
        assert_eq!(GuestInfo::decode(&info.encode()), Some(info.clone()));
        assert_eq!(GuestInfo::decode(&[3, 0, 0]), None);
        let mut bad = info.encode();
        bad.push(0xff);
        assert_eq!(GuestInfo::decode(&bad), None);
    }
}
