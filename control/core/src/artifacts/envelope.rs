//! The envelope scheme, with AES-256-GCM from the `aes-gcm` crate for both layers: the
//! artifact is sealed under its own data key, and the data key is sealed ("wrapped") under a
//! master key. The associated data of each layer is built here, in one place, so what a
//! ciphertext is bound to cannot drift between writing and reading:
//!
//! - blob: `"ember artifact blob v1\0"`, then account and artifact id, each as one length
//!   byte and the bytes. A blob moved to another artifact or account no longer opens.
//! - data key: `"ember artifact key v1\0"`, the same account and id, then every header
//!   byte before the wrap nonce (format, master key id, blob generation, blob nonce,
//!   length). So the header cannot be edited without the data key failing to unwrap.

use aes_gcm::aead::{Aead, Nonce, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use zeroize::Zeroizing;

/// Bytes AES-GCM adds to what it seals (the tag).
pub(super) const TAG_LEN: usize = 16;
/// A wrapped data key: 32 key bytes and the tag.
pub(super) const WRAPPED_LEN: usize = 32 + TAG_LEN;

fn cipher(key: &[u8; 32]) -> Aes256Gcm {
    Aes256Gcm::new(key.into())
}

fn bound_to(domain: &[u8], account: &str, artifact_id: &str, rest: &[u8]) -> Vec<u8> {
    let mut aad = domain.to_vec();
    for part in [account, artifact_id] {
        // Names are at most 64 bytes (crate::names), so one length byte is enough.
        aad.push(part.len() as u8);
        aad.extend_from_slice(part.as_bytes());
    }
    aad.extend_from_slice(rest);
    aad
}

/// Associated data of an artifact's blob.
pub(super) fn blob_aad(account: &str, artifact_id: &str) -> Vec<u8> {
    bound_to(b"ember artifact blob v1\0", account, artifact_id, &[])
}

/// Associated data of an artifact's wrapped data key; `header` is the header up to the
/// wrap nonce.
pub(super) fn key_aad(account: &str, artifact_id: &str, header: &[u8]) -> Vec<u8> {
    bound_to(b"ember artifact key v1\0", account, artifact_id, header)
}

/// Seals `plaintext`; `None` only past AES-GCM's message limit (64 GiB).
pub(super) fn seal(
    key: &[u8; 32],
    nonce: [u8; 12],
    aad: &[u8],
    plaintext: &[u8],
) -> Option<Vec<u8>> {
    cipher(key)
        .encrypt(
            &Nonce::<Aes256Gcm>::from(nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .ok()
}

/// Opens what [`seal`] sealed; `None` if anything (key, nonce, associated data, a single
/// bit of the ciphertext or tag) differs.
pub(super) fn open(key: &[u8; 32], nonce: [u8; 12], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    cipher(key)
        .decrypt(
            &Nonce::<Aes256Gcm>::from(nonce),
            Payload { msg: sealed, aad },
        )
        .ok()
}

/// Wraps a data key under a master key.
pub(super) fn wrap(
    master: &[u8; 32],
    nonce: [u8; 12],
    aad: &[u8],
    data_key: &[u8; 32],
) -> [u8; WRAPPED_LEN] {
    let sealed = seal(master, nonce, aad, data_key)
        .expect("AES-GCM seals 32 bytes, far below its message limit");
    let mut wrapped = [0u8; WRAPPED_LEN];
    wrapped.copy_from_slice(&sealed);
    wrapped
}

/// Unwraps a data key; `None` if the wrapped key, its nonce, the associated data or the
/// master key is not the one it was wrapped with.
pub(super) fn unwrap(
    master: &[u8; 32],
    nonce: [u8; 12],
    aad: &[u8],
    wrapped: &[u8; WRAPPED_LEN],
) -> Option<Zeroizing<[u8; 32]>> {
    let opened = Zeroizing::new(open(master, nonce, aad, wrapped)?);
    let mut key = Zeroizing::new([0u8; 32]);
    key.copy_from_slice(opened.get(..32)?);
    Some(key)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [7; 32];
    const NONCE: [u8; 12] = [9; 12];

    #[test]
    fn every_input_is_bound() {
        let aad = blob_aad("acct", "art");
        let sealed = seal(&KEY, NONCE, &aad, b"code").unwrap();
        assert_eq!(sealed.len(), 4 + TAG_LEN);
        assert_eq!(open(&KEY, NONCE, &aad, &sealed).unwrap(), b"code");
        assert!(open(&[8; 32], NONCE, &aad, &sealed).is_none());
        assert!(open(&KEY, [0; 12], &aad, &sealed).is_none());
        assert!(open(&KEY, NONCE, &blob_aad("acct", "art2"), &sealed).is_none());
        assert!(open(&KEY, NONCE, &blob_aad("acct2", "art"), &sealed).is_none());
        // Length prefixes keep ("ab","c") and ("a","bc") apart.
        assert_ne!(blob_aad("ab", "c"), blob_aad("a", "bc"));
        for i in 0..sealed.len() {
            let mut flipped = sealed.clone();
            flipped[i] ^= 1;
            assert!(open(&KEY, NONCE, &aad, &flipped).is_none(), "byte {i}");
        }
    }

    #[test]
    fn wraps_data_keys() {
        let aad = key_aad("acct", "art", b"header");
        let data_key = [3u8; 32];
        let wrapped = wrap(&KEY, NONCE, &aad, &data_key);
        assert_ne!(&wrapped[..32], &data_key);
        assert_eq!(*unwrap(&KEY, NONCE, &aad, &wrapped).unwrap(), data_key);
        assert!(unwrap(&KEY, NONCE, &key_aad("acct", "art", b"headeR"), &wrapped).is_none());
        assert!(unwrap(&[1; 32], NONCE, &aad, &wrapped).is_none());
        // Blob and key associated data never coincide.
        assert_ne!(blob_aad("a", "b"), key_aad("a", "b", &[]));
    }
}
