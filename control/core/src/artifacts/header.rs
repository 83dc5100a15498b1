//! An artifact's header file (`<id>.hdr`): everything needed to decrypt its blob except the
//! master key. Fixed binary layout, integers big-endian:
//!
//! | bytes | field |
//! |---|---|
//! | 8 | magic `EMBERART` |
//! | 1 | format version, 1 |
//! | 1 + n | master key id: length n (1..=64), then ASCII |
//! | 16 | blob generation: the blob is `<id>.<32 hex digits>.blob` |
//! | 12 | blob nonce |
//! | 8 | plaintext length (the blob is 16 bytes longer) |
//! | 12 | wrap nonce |
//! | 48 | wrapped data key (AES-256-GCM ciphertext and tag) |
//! | 32 | SHA-256 of all bytes above |
//!
//! The wrapped data key authenticates everything before the wrap nonce (see `envelope`); the
//! trailing digest only tells an accidentally damaged header (say, one flipped bit in the
//! key id) from a header wrapped by a key the keyring lacks.

use sha2::{Digest, Sha256};

use super::envelope::WRAPPED_LEN;
use crate::random;

const MAGIC: &[u8; 8] = b"EMBERART";
const VERSION: u8 = 1;
const MAX_KEY_ID: usize = 64;
const DIGEST_LEN: usize = 32;

/// A parsed header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Header {
    pub(super) master_key_id: String,
    pub(super) generation: [u8; 16],
    pub(super) blob_nonce: [u8; 12],
    pub(super) plaintext_len: u64,
    pub(super) wrap_nonce: [u8; 12],
    pub(super) wrapped_key: [u8; WRAPPED_LEN],
}

impl Header {
    /// The bytes the wrapped key's associated data covers: everything before the wrap nonce.
    pub(super) fn authenticated(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(self.master_key_id.len() as u8);
        out.extend_from_slice(self.master_key_id.as_bytes());
        out.extend_from_slice(&self.generation);
        out.extend_from_slice(&self.blob_nonce);
        out.extend_from_slice(&self.plaintext_len.to_be_bytes());
        out
    }

    /// The whole header file.
    pub(super) fn encode(&self) -> Vec<u8> {
        let mut out = self.authenticated();
        out.extend_from_slice(&self.wrap_nonce);
        out.extend_from_slice(&self.wrapped_key);
        let digest = Sha256::digest(&out);
        out.extend_from_slice(&digest);
        out
    }

    /// Parses a header file; the error says what is wrong, for a "tampered" message.
    pub(super) fn parse(bytes: &[u8]) -> Result<Header, &'static str> {
        let body_len = bytes
            .len()
            .checked_sub(DIGEST_LEN)
            .ok_or("header is truncated")?;
        let (body, digest) = bytes.split_at(body_len);
        if Sha256::digest(body).as_slice() != digest {
            return Err("header checksum does not match");
        }
        let mut r = Reader(body);
        if r.take::<8>()? != *MAGIC {
            return Err("not an artifact header");
        }
        if r.take::<1>()?[0] != VERSION {
            return Err("unknown header version");
        }
        let id_len = usize::from(r.take::<1>()?[0]);
        if id_len == 0 || id_len > MAX_KEY_ID {
            return Err("bad master key id length");
        }
        let id = r.bytes(id_len)?;
        let master_key_id = std::str::from_utf8(id)
            .ok()
            .filter(|id| id.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or("bad master key id")?
            .to_owned();
        let header = Header {
            master_key_id,
            generation: r.take()?,
            blob_nonce: r.take()?,
            plaintext_len: u64::from_be_bytes(r.take()?),
            wrap_nonce: r.take()?,
            wrapped_key: r.take()?,
        };
        if !r.0.is_empty() {
            return Err("header has trailing bytes");
        }
        Ok(header)
    }

    /// The blob's file name for artifact `artifact_id`.
    pub(super) fn blob_name(&self, artifact_id: &str) -> String {
        blob_name(artifact_id, &self.generation)
    }
}

/// `<id>.<generation as hex>.blob`.
pub(super) fn blob_name(artifact_id: &str, generation: &[u8; 16]) -> String {
    format!("{artifact_id}.{}.blob", random::hex(generation))
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if self.0.len() < n {
            return Err("header is truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn take<const N: usize>(&mut self) -> Result<[u8; N], &'static str> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.bytes(N)?);
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            master_key_id: "mk-0123456789abcdef".into(),
            generation: [1; 16],
            blob_nonce: [2; 12],
            plaintext_len: 1234,
            wrap_nonce: [3; 12],
            wrapped_key: [4; WRAPPED_LEN],
        }
    }

    #[test]
    fn round_trips_and_has_the_documented_size() {
        let header = sample();
        let bytes = header.encode();
        assert_eq!(bytes.len(), 8 + 1 + 1 + 19 + 16 + 12 + 8 + 12 + 48 + 32);
        assert_eq!(Header::parse(&bytes), Ok(header.clone()));
        assert!(bytes.starts_with(&header.authenticated()));
        assert_eq!(
            header.blob_name("fn1"),
            "fn1.01010101010101010101010101010101.blob"
        );
    }

    #[test]
    fn any_damage_is_refused() {
        let bytes = sample().encode();
        for i in 0..bytes.len() {
            for bit in [0x01, 0x80] {
                let mut damaged = bytes.clone();
                damaged[i] ^= bit;
                assert!(Header::parse(&damaged).is_err(), "byte {i} bit {bit:#x}");
            }
        }
        for len in 0..bytes.len() {
            assert!(Header::parse(&bytes[..len]).is_err(), "length {len}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(Header::parse(&longer).is_err());
    }

    #[test]
    fn checks_fields_behind_a_valid_checksum() {
        // A header rebuilt with a recomputed digest must still be well-formed.
        let reseal = |mut body: Vec<u8>| {
            let digest = Sha256::digest(&body);
            body.extend_from_slice(&digest);
            body
        };
        let bytes = sample().encode();
        let body = bytes[..bytes.len() - DIGEST_LEN].to_vec();
        let mut bad_version = body.clone();
        bad_version[8] = 2;
        assert_eq!(
            Header::parse(&reseal(bad_version)),
            Err("unknown header version")
        );
        let mut bad_id = body.clone();
        bad_id[10] = b' ';
        assert_eq!(Header::parse(&reseal(bad_id)), Err("bad master key id"));
        let mut no_id = body.clone();
        no_id[9] = 0;
        assert_eq!(
            Header::parse(&reseal(no_id)),
            Err("bad master key id length")
        );
        let mut extra = body;
        extra.push(0);
        assert_eq!(
            Header::parse(&reseal(extra)),
            Err("header has trailing bytes")
        );
    }
}
