//! Secrets kept in the registry's database, sealed under the master keys: access-key
//! secrets, function environment variables and queued event payloads. A copy of the
//! database (a backup, a PostgreSQL replica, a stolen disk) then reveals none of them
//! without the keyring.
//!
//! A sealed value is text, so it fits the column that held the plaintext:
//! `ember-sealed:v1:<master key id>:<base64 of nonce ‖ AES-256-GCM ciphertext ‖ tag>`.
//! Values are small, so they are sealed under the master key directly (a data key per value
//! would double their size for nothing); rotation re-seals them, which costs what
//! re-wrapping a data key would. The associated data binds each value to its *context*
//! (which column of which row, e.g. `access_keys.secret/AKIA…`), so a value copied into
//! another row does not open.

use std::sync::{PoisonError, RwLock};

use aes_gcm::aead::{Aead, Nonce, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use zeroize::Zeroizing;

use crate::keys::{KeyError, Keyring, MasterKey};
use crate::random;

/// What every sealed value starts with; a value without it was never sealed.
pub const PREFIX: &str = "ember-sealed:v1:";

const NONCE_LEN: usize = 12;

/// Why a value could not be sealed or opened.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("random generator: {0}")]
    Random(#[from] std::io::Error),
    #[error("{context} is sealed under master key {key_id}, which the keyring does not hold")]
    UnknownKey { context: String, key_id: String },
    #[error("{context} is not a sealed value")]
    Malformed { context: String },
    #[error("{context} does not open: it was changed, or sealed for another row")]
    Tampered { context: String },
}

/// Seals and opens database values with a keyring, following its rotations.
#[derive(Debug)]
pub struct Sealer {
    keyring: RwLock<Keyring>,
}

impl Sealer {
    pub fn new(keyring: Keyring) -> Sealer {
        Sealer {
            keyring: RwLock::new(keyring),
        }
    }

    /// Seals `plaintext` as the value of `context` under the active master key, picking
    /// up a rotation another process made first.
    pub fn seal(&self, context: &str, plaintext: &[u8]) -> Result<String, SealError> {
        let key = {
            let mut keyring = self.keyring.write().unwrap_or_else(PoisonError::into_inner);
            keyring.refresh()?;
            keyring.active().clone()
        };
        seal_with(&key, context, plaintext)
    }

    /// Opens `sealed`, the value of `context`.
    pub fn open(&self, context: &str, sealed: &str) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let (key_id, body) = split(sealed).ok_or_else(|| SealError::Malformed {
            context: context.to_owned(),
        })?;
        let key = self.key(key_id).ok_or_else(|| SealError::UnknownKey {
            context: context.to_owned(),
            key_id: key_id.to_owned(),
        })?;
        let tampered = || SealError::Tampered {
            context: context.to_owned(),
        };
        let bytes = STANDARD.decode(body).map_err(|_| tampered())?;
        if bytes.len() < NONCE_LEN {
            return Err(tampered());
        }
        let (nonce, ciphertext) = bytes.split_at(NONCE_LEN);
        let nonce = Nonce::<Aes256Gcm>::try_from(nonce).map_err(|_| tampered())?;
        let aad = aad(key_id, context);
        Aes256Gcm::new(key.bytes().into())
            .decrypt(
                &nonce,
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .map(Zeroizing::new)
            .map_err(|_| tampered())
    }

    /// [`Sealer::open`] of a value that must be UTF-8 text.
    pub fn open_text(&self, context: &str, sealed: &str) -> Result<Zeroizing<String>, SealError> {
        let bytes = self.open(context, sealed)?;
        String::from_utf8(bytes.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| SealError::Tampered {
                context: context.to_owned(),
            })
    }

    /// Re-seals `value` under the active key if it is not sealed under it already (a value
    /// never sealed is sealed now); `None` when nothing needs to change.
    pub fn reseal(&self, context: &str, value: &str) -> Result<Option<String>, SealError> {
        let active = self.active_key_id()?;
        let plaintext = match key_id(value) {
            Some(id) if id == active => return Ok(None),
            Some(_) => self.open(context, value)?,
            None => Zeroizing::new(value.as_bytes().to_vec()),
        };
        self.seal(context, &plaintext).map(Some)
    }

    /// The active master key's id, after picking up a rotation.
    pub fn active_key_id(&self) -> Result<String, SealError> {
        let mut keyring = self.keyring.write().unwrap_or_else(PoisonError::into_inner);
        keyring.refresh()?;
        Ok(keyring.active().id().to_owned())
    }

    /// The master key `id`, reloading the keyring once if it lacks it (another process may
    /// have rotated).
    fn key(&self, id: &str) -> Option<MasterKey> {
        if let Some(key) = self
            .keyring
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Some(key.clone());
        }
        let mut keyring = self.keyring.write().unwrap_or_else(PoisonError::into_inner);
        keyring.reload().ok()?;
        keyring.get(id).cloned()
    }
}

/// The master key id `value` is sealed under; `None` for a value never sealed.
pub fn key_id(value: &str) -> Option<&str> {
    split(value).map(|(id, _)| id)
}

/// The `LIKE` pattern of values sealed under master key `key_id`.
pub fn like_pattern(key_id: &str) -> String {
    format!("{PREFIX}{key_id}:%")
}

fn split(value: &str) -> Option<(&str, &str)> {
    value.strip_prefix(PREFIX)?.split_once(':')
}

fn seal_with(key: &MasterKey, context: &str, plaintext: &[u8]) -> Result<String, SealError> {
    let nonce = random::bytes::<NONCE_LEN>()?;
    let aad = aad(key.id(), context);
    let ciphertext = Aes256Gcm::new(key.bytes().into())
        .encrypt(
            &Nonce::<Aes256Gcm>::from(nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| std::io::Error::other("AES-GCM refused a database value"))?;
    let mut body = nonce.to_vec();
    body.extend_from_slice(&ciphertext);
    Ok(format!("{PREFIX}{}:{}", key.id(), STANDARD.encode(body)))
}

/// `"ember sealed value v1\0"`, the key id, NUL, the context.
fn aad(key_id: &str, context: &str) -> Vec<u8> {
    let mut aad = b"ember sealed value v1\0".to_vec();
    aad.extend_from_slice(key_id.as_bytes());
    aad.push(0);
    aad.extend_from_slice(context.as_bytes());
    aad
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> (tempfile::TempDir, Sealer) {
        let dir = tempfile::tempdir().unwrap();
        let keyring = Keyring::load_or_create(dir.path()).unwrap();
        (dir, Sealer::new(keyring))
    }

    #[test]
    fn seals_and_opens_bound_to_the_context() {
        let (_dir, sealer) = sealer();
        let sealed = sealer.seal("t.c/row1", b"hunter2").unwrap();
        assert!(sealed.starts_with(PREFIX));
        assert!(!sealed.contains("hunter2"));
        assert_eq!(&*sealer.open("t.c/row1", &sealed).unwrap(), b"hunter2");
        assert_ne!(
            sealer.seal("t.c/row1", b"hunter2").unwrap(),
            sealed,
            "fresh nonce"
        );
        assert!(matches!(
            sealer.open("t.c/row2", &sealed),
            Err(SealError::Tampered { .. })
        ));
        let mut flipped = sealed.clone().into_bytes();
        let last = flipped.len() - 3;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert!(matches!(
            sealer.open("t.c/row1", &String::from_utf8(flipped).unwrap()),
            Err(SealError::Tampered { .. })
        ));
        assert!(matches!(
            sealer.open("t.c/row1", "hunter2"),
            Err(SealError::Malformed { .. })
        ));
    }

    #[test]
    fn follows_a_rotation_made_by_another_process() {
        let (dir, sealer) = sealer();
        let old = sealer.seal("c", b"v").unwrap();
        let old_id = key_id(&old).unwrap().to_owned();
        assert_eq!(sealer.reseal("c", &old).unwrap(), None);

        let mut other = Keyring::load_or_create(dir.path()).unwrap();
        let new_id = other.rotate().unwrap().id().to_owned();
        let new = sealer.seal("c", b"w").unwrap();
        assert_eq!(key_id(&new), Some(new_id.as_str()));
        let resealed = sealer.reseal("c", &old).unwrap().unwrap();
        assert_eq!(key_id(&resealed), Some(new_id.as_str()));
        assert_eq!(&*sealer.open("c", &resealed).unwrap(), b"v");
        let plain = sealer.reseal("c", "plain").unwrap().unwrap();
        assert_eq!(&*sealer.open_text("c", &plain).unwrap(), "plain");

        other.retire(&old_id).unwrap();
        let fresh = Sealer::new(Keyring::load_or_create(dir.path()).unwrap());
        assert!(matches!(
            fresh.open("c", &old),
            Err(SealError::UnknownKey { key_id, .. }) if key_id == old_id
        ));
    }
}
