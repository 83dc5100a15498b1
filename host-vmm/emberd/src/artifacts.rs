//! The worker's code cache: a function's module is fetched from control once (with the
//! grant that came with the invocation), kept encrypted at rest under a key of this
//! worker's own (`cache.key`, AES-256-GCM from the `aes-gcm` crate), and read from there
//! afterwards. Entries are keyed by account and artifact id: an artifact id names one
//! module forever, so an entry never goes stale.
//!
//! File format (`artifacts/<account>/<artifact id>`, 0600): a random 96-bit nonce, then
//! the ciphertext and tag. The associated data binds the entry to its account and id, so
//! a file moved to another name does not open. An entry that does not open (damaged, or
//! a new cache key) is fetched again.
//!
//! Concurrent first invocations of a version wait for one download: each artifact has a
//! lock that its fetch holds.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use aes_gcm::aead::{Aead, Nonce, Payload};
use aes_gcm::{Aes256Gcm, KeyInit};
use ember_fleet::messages::CodeRef;

use crate::control::{CallError, ControlClient};
use crate::state_dir::{self, ARTIFACTS_DIR, CACHE_KEY_FILE};

const NONCE_LEN: usize = 12;

type Key = (String, String);

/// Why a module could not be had.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    /// `what` (account or artifact id) is no name control gives out.
    #[error("invalid {what} {name:?}")]
    InvalidName { what: &'static str, name: String },
    #[error("{}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("fetching the code: {0}")]
    Fetch(#[source] CallError),
    #[error("random nonce: {0}")]
    Nonce(#[source] getrandom::Error),
    #[error("encrypting the code")]
    Encrypt,
    #[error("caching the code: {0}")]
    Cache(#[source] io::Error),
}

/// The encrypted module cache.
pub struct ArtifactCache {
    dir: PathBuf,
    cipher: Aes256Gcm,
    control: Arc<ControlClient>,
    locks: Mutex<HashMap<Key, Arc<tokio::sync::Mutex<()>>>>,
}

impl ArtifactCache {
    /// The cache in `state_dir`, fetching from `control`.
    pub fn open(state_dir: &Path, control: Arc<ControlClient>) -> io::Result<ArtifactCache> {
        let key = state_dir::load_or_create_key(&state_dir.join(CACHE_KEY_FILE))?;
        let dir = state_dir.join(ARTIFACTS_DIR);
        state_dir::private_dir(&dir)?;
        Ok(ArtifactCache {
            dir,
            cipher: Aes256Gcm::new((&*key).into()),
            control,
            locks: Mutex::default(),
        })
    }

    /// The module `code` names: from the cache, or fetched with its grant and cached.
    pub async fn module(&self, code: &CodeRef) -> Result<Vec<u8>, ArtifactError> {
        for (what, name) in [
            ("account", &code.account),
            ("artifact id", &code.artifact_id),
        ] {
            if !valid_name(name) {
                return Err(ArtifactError::InvalidName {
                    what,
                    name: name.clone(),
                });
            }
        }
        let key = (code.account.clone(), code.artifact_id.clone());
        let lock = self
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key)
            .or_default()
            .clone();
        let _fetching = lock.lock().await;
        let path = self.dir.join(&code.account).join(&code.artifact_id);
        match fs::read(&path) {
            Ok(sealed) => match self.unseal(code, &sealed) {
                Some(module) => return Ok(module),
                None => log::warn!("{}: does not decrypt; fetching it again", path.display()),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => return Err(ArtifactError::Read { path, source }),
        }
        let module = self
            .control
            .artifact(&code.account, &code.artifact_id, &code.grant)
            .await
            .map_err(ArtifactError::Fetch)?;
        let sealed = self.seal(code, &module)?;
        state_dir::private_dir(&self.dir.join(&code.account))
            .and_then(|()| state_dir::write_private(&path, &sealed))
            .map_err(ArtifactError::Cache)?;
        log::info!(
            "cached {}/{} ({} bytes)",
            code.account,
            code.artifact_id,
            module.len()
        );
        Ok(module)
    }

    fn seal(&self, code: &CodeRef, module: &[u8]) -> Result<Vec<u8>, ArtifactError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(ArtifactError::Nonce)?;
        let aad = aad(code);
        let sealed = self
            .cipher
            .encrypt(
                &Nonce::<Aes256Gcm>::from(nonce),
                Payload {
                    msg: module,
                    aad: &aad,
                },
            )
            .map_err(|_| ArtifactError::Encrypt)?;
        Ok([nonce.as_slice(), &sealed].concat())
    }

    fn unseal(&self, code: &CodeRef, sealed: &[u8]) -> Option<Vec<u8>> {
        let (nonce, ciphertext) = sealed.split_first_chunk::<NONCE_LEN>()?;
        let aad = aad(code);
        self.cipher
            .decrypt(
                &Nonce::<Aes256Gcm>::from(*nonce),
                Payload {
                    msg: ciphertext,
                    aad: &aad,
                },
            )
            .ok()
    }
}

/// `"ember worker cache v1\0"`, then account and artifact id, each as a length byte and
/// the bytes (both are at most 64 bytes).
fn aad(code: &CodeRef) -> Vec<u8> {
    let mut aad = b"ember worker cache v1\0".to_vec();
    for part in [&code.account, &code.artifact_id] {
        aad.push(part.len() as u8);
        aad.extend_from_slice(part.as_bytes());
    }
    aad
}

/// Account and artifact ids become file names: `[A-Za-z0-9_-]{1,64}`, as control
/// checks them.
fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::CertificateParams;

    fn code(account: &str, artifact_id: &str) -> CodeRef {
        CodeRef {
            account: account.into(),
            artifact_id: artifact_id.into(),
            grant: "unused".into(),
        }
    }

    #[tokio::test]
    async fn entries_are_sealed_bound_to_their_name_and_refetched_when_damaged() {
        let dir = tempfile::tempdir().unwrap();
        // Control is unreachable here: only cached entries can be read.
        let control =
            Arc::new(ControlClient::new("https://127.0.0.1:1", &test_ca(), None).unwrap());
        let cache = ArtifactCache::open(dir.path(), control).unwrap();
        let a = code("123456789012", "art-1");
        let sealed = cache.seal(&a, b"\0asm module").unwrap();
        assert!(!sealed.windows(6).any(|w| w == b"module"), "encrypted");
        assert_eq!(cache.unseal(&a, &sealed).unwrap(), b"\0asm module");
        assert!(cache
            .unseal(&code("123456789012", "art-2"), &sealed)
            .is_none());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(cache.unseal(&a, &flipped).is_none());

        // A cached entry is served without control.
        let path = dir.path().join(ARTIFACTS_DIR).join(&a.account);
        state_dir::private_dir(&path).unwrap();
        state_dir::write_private(&path.join(&a.artifact_id), &sealed).unwrap();
        assert_eq!(cache.module(&a).await.unwrap(), b"\0asm module");
        // A damaged one is fetched again (and control is unreachable here).
        state_dir::write_private(&path.join(&a.artifact_id), &flipped).unwrap();
        let err = cache.module(&a).await.unwrap_err();
        assert!(matches!(err, ArtifactError::Fetch(_)), "{err}");
        assert!(err.to_string().contains("fetching the code"), "{err}");
        assert!(cache.module(&code("../x", "a")).await.is_err());
    }

    /// A self-signed CA, enough to build a client.
    fn test_ca() -> String {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params.self_signed(&key).unwrap().pem()
    }
}
