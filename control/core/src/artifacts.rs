//! The encrypted artifact store: function code at rest, in `DIR/artifacts/`.
//!
//! Each artifact (one account's one upload) is two files in its account's folder:
//!
//! - `<id>.<generation>.blob`: the code sealed with AES-256-GCM under a fresh random data
//!   key, bound to the account and artifact id (`envelope`);
//! - `<id>.hdr`: the data key wrapped by a master key, the nonces, the length and which blob
//!   is current (`header`).
//!
//! **Atomicity.** A put writes the blob under a new generation (temporary file, fsync,
//! rename), then the header the same way; the header's rename is the commit point, and
//! only then is the previous blob removed. A crash at any step leaves the previous header
//! pointing at the previous, complete blob (or no header: not found). Temporary files and
//! blobs no header points to are never read, and [`ArtifactStore::open`] removes them.
//!
//! **Key rotation.** Re-wrapping rewrites only headers, so code is never re-encrypted and
//! blobs keep their exact bytes. A put wraps its data key under the master key that is
//! active *when it commits*, reloading the keyring first; together with
//! [`ArtifactStore::retire_key`] checking every header under the store's lock, no artifact
//! can be left wrapped by a retired key, even with a `keys` command running beside the
//! service.
//!
//! **Concurrency.** A lock file (`artifacts/.lock`) is held exclusively while a header
//! changes and shared while one is read with its blob opened, across processes. Reading and
//! decrypting the blob happens outside the lock: an open file stays readable after a later
//! put removes it.

mod envelope;
mod header;

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{self, File};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use zeroize::Zeroizing;

use crate::atomic::{self, with_path};
use crate::keys::{KeyError, Keyring, MasterKey};
use crate::lock::{self, Mode};
use crate::names::{self, InvalidName};
use crate::random;
use header::Header;

/// The store's folder inside the data directory.
pub const DIR: &str = "artifacts";

/// Temporary files older than this are a crash's leftovers (no write takes that long).
const STALE_TEMP: Duration = Duration::from_secs(3600);

/// What a put stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ArtifactRef {
    pub account: String,
    pub artifact_id: String,
    /// Bytes of the code (the blob is 16 bytes longer).
    pub size: u64,
    /// The master key that wraps its data key.
    pub master_key_id: String,
}

/// What [`ArtifactStore::rewrap_all`] did.
#[derive(Debug, Default)]
pub struct RewrapReport {
    /// Artifacts whose data key is now wrapped by the active key instead of an older one.
    pub rewrapped: usize,
    /// Artifacts that already were.
    pub current: usize,
    /// Artifacts that could not be re-wrapped (account, artifact id, why); while any is
    /// listed here, keep the old keys.
    pub failed: Vec<(String, String, ArtifactError)>,
}

/// Why an artifact could not be stored, read or re-wrapped.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error(transparent)]
    InvalidName(#[from] InvalidName),
    #[error("artifact {account}/{artifact_id} not found")]
    NotFound {
        account: String,
        artifact_id: String,
    },
    /// A header, wrapped key or blob that does not authenticate: damaged on disk or
    /// tampered with (or moved from another artifact or account). Never served.
    #[error("artifact {account}/{artifact_id} is damaged or has been tampered with ({reason}); refusing it")]
    Tampered {
        account: String,
        artifact_id: String,
        reason: &'static str,
    },
    /// An intact header names a master key the keyring lacks (retired too early, or the
    /// service runs with another keyring).
    #[error("artifact {account}/{artifact_id} is wrapped by master key {key_id}, which the keyring does not hold")]
    UnknownMasterKey {
        account: String,
        artifact_id: String,
        key_id: String,
    },
    /// [`ArtifactStore::retire_key`] found artifacts still wrapped by the key.
    #[error("master key {key_id} still wraps {count} artifact(s); re-wrap them first")]
    KeyInUse { key_id: String, count: usize },
    /// More than AES-GCM seals in one message (64 GiB).
    #[error("artifact of {size} bytes is larger than the {limit} bytes one artifact may hold")]
    TooLarge { size: u64, limit: u64 },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// The store.
#[derive(Debug)]
pub struct ArtifactStore {
    root: PathBuf,
    keyring: RwLock<Keyring>,
}

/// A blob written to a temporary file, waiting for [`ArtifactStore::commit`].
struct Staged {
    account: String,
    artifact_id: String,
    temp: PathBuf,
    data_key: Zeroizing<[u8; 32]>,
    generation: [u8; 16],
    blob_nonce: [u8; 12],
    size: u64,
}

impl ArtifactStore {
    /// Opens (creating if needed) the store in `data_dir/artifacts`, removing what crashed
    /// writes left behind.
    pub fn open(data_dir: &Path, keyring: Keyring) -> Result<ArtifactStore, ArtifactError> {
        let root = data_dir.join(DIR);
        atomic::private_dir(&root).map_err(|e| with_path(e, &root))?;
        let store = ArtifactStore {
            root,
            keyring: RwLock::new(keyring),
        };
        store.clean()?;
        Ok(store)
    }

    /// Stores `bytes` as `account`'s artifact `artifact_id`, replacing any previous version
    /// atomically.
    pub fn put(
        &self,
        account: &str,
        artifact_id: &str,
        bytes: &[u8],
    ) -> Result<ArtifactRef, ArtifactError> {
        let staged = self.stage(account, artifact_id, bytes)?;
        self.commit(staged)
    }

    /// The code of `account`'s artifact `artifact_id`, decrypted and authenticated.
    pub fn get(&self, account: &str, artifact_id: &str) -> Result<Vec<u8>, ArtifactError> {
        check(account, artifact_id)?;
        let (header, mut blob) = {
            let _lock = self.lock(Mode::Shared)?;
            let header = self.read_header(account, artifact_id)?;
            let path = self
                .account_dir(account)
                .join(header.blob_name(artifact_id));
            let blob = match File::open(&path) {
                Ok(blob) => blob,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(tampered(account, artifact_id, "its blob is missing"))
                }
                Err(e) => return Err(with_path(e, &path).into()),
            };
            (header, blob)
        };
        let master = self.master_key(account, artifact_id, &header.master_key_id)?;
        let data_key = unwrap_data_key(&master, account, artifact_id, &header)?;
        let sealed_len = header
            .plaintext_len
            .checked_add(envelope::TAG_LEN as u64)
            .ok_or_else(|| tampered(account, artifact_id, "impossible length"))?;
        if blob.metadata()?.len() != sealed_len {
            return Err(tampered(
                account,
                artifact_id,
                "its blob has the wrong length",
            ));
        }
        let mut sealed = Vec::new();
        sealed
            .try_reserve_exact(sealed_len as usize)
            .map_err(io::Error::other)?;
        (&mut blob).take(sealed_len).read_to_end(&mut sealed)?;
        envelope::open(
            &data_key,
            header.blob_nonce,
            &envelope::blob_aad(account, artifact_id),
            &sealed,
        )
        .ok_or_else(|| tampered(account, artifact_id, "its blob does not authenticate"))
    }

    /// Removes `account`'s artifact `artifact_id`.
    pub fn delete(&self, account: &str, artifact_id: &str) -> Result<(), ArtifactError> {
        check(account, artifact_id)?;
        let _lock = self.lock(Mode::Exclusive)?;
        let dir = self.account_dir(account);
        let path = header_path(&dir, artifact_id);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_found(account, artifact_id))
            }
            Err(e) => return Err(with_path(e, &path).into()),
        }
        // The header is gone, so every blob of the id is unreferenced now.
        for name in file_names(&dir)? {
            if blob_owner(&name) == Some(artifact_id) {
                remove_if_present(&dir.join(name))?;
            }
        }
        atomic::sync_dir(&dir).map_err(|e| with_path(e, &dir))?;
        Ok(())
    }

    /// Adopts `keyring` and re-wraps every data key not wrapped by its active key, one
    /// header at a time; blobs are not touched.
    pub fn rewrap_all(&self, keyring: &Keyring) -> Result<RewrapReport, ArtifactError> {
        *self.keyring_mut() = keyring.clone();
        let mut report = RewrapReport::default();
        for (account, artifact_id) in self.list()? {
            let _lock = self.lock(Mode::Exclusive)?;
            match self.rewrap(keyring, &account, &artifact_id) {
                Ok(true) => report.rewrapped += 1,
                Ok(false) => report.current += 1,
                // Deleted since it was listed.
                Err(ArtifactError::NotFound { .. }) => {}
                Err(e) => report.failed.push((account, artifact_id, e)),
            }
        }
        Ok(report)
    }

    /// Removes master key `key_id` from `keyring` (and its file), after checking under the
    /// store's lock that no artifact is wrapped by it any more; refuses while one is, or
    /// while a header cannot be read to tell.
    pub fn retire_key(&self, keyring: &mut Keyring, key_id: &str) -> Result<(), ArtifactError> {
        let _lock = self.lock(Mode::Exclusive)?;
        let mut count = 0;
        for (account, artifact_id) in self.list()? {
            match self.read_header(&account, &artifact_id) {
                Ok(header) => count += usize::from(header.master_key_id == key_id),
                Err(ArtifactError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        if count > 0 {
            return Err(ArtifactError::KeyInUse {
                key_id: key_id.to_owned(),
                count,
            });
        }
        keyring.retire(key_id)?;
        *self.keyring_mut() = keyring.clone();
        Ok(())
    }

    /// Encrypts `bytes` under a fresh data key into a temporary blob file. Slow for large
    /// code, so done before taking the lock.
    fn stage(
        &self,
        account: &str,
        artifact_id: &str,
        bytes: &[u8],
    ) -> Result<Staged, ArtifactError> {
        check(account, artifact_id)?;
        let size = bytes.len() as u64;
        let too_large = || ArtifactError::TooLarge {
            size,
            limit: aes_gcm::P_MAX,
        };
        if size > aes_gcm::P_MAX {
            return Err(too_large());
        }
        let dir = self.account_dir(account);
        atomic::private_dir(&dir).map_err(|e| with_path(e, &dir))?;
        let data_key = random::key()?;
        let blob_nonce = random::bytes()?;
        let sealed = envelope::seal(
            &data_key,
            blob_nonce,
            &envelope::blob_aad(account, artifact_id),
            bytes,
        )
        .ok_or_else(too_large)?;
        let temp = atomic::write_temp(&dir, &sealed, 0o600).map_err(|e| with_path(e, &dir))?;
        Ok(Staged {
            account: account.to_owned(),
            artifact_id: artifact_id.to_owned(),
            temp,
            data_key,
            generation: random::bytes()?,
            blob_nonce,
            size,
        })
    }

    /// Moves a staged blob into place and commits its header, wrapped by the master key
    /// active now.
    fn commit(&self, staged: Staged) -> Result<ArtifactRef, ArtifactError> {
        let _lock = self.lock(Mode::Exclusive)?;
        let committed = self.commit_locked(&staged);
        if committed.is_err() {
            // Whatever of it reached the disk is unreferenced; best effort, `open` retries.
            let _ = fs::remove_file(&staged.temp);
        }
        committed
    }

    fn commit_locked(&self, staged: &Staged) -> Result<ArtifactRef, ArtifactError> {
        let (account, artifact_id) = (&staged.account, &staged.artifact_id);
        // Under the lock, so a key retired meanwhile is never used (see `retire_key`).
        let master = {
            let mut keyring = self.keyring_mut();
            keyring.reload()?;
            keyring.active().clone()
        };
        let header = wrap_data_key(
            &master,
            account,
            artifact_id,
            &staged.data_key,
            staged.generation,
            staged.blob_nonce,
            staged.size,
        )?;
        let dir = self.account_dir(account);
        let previous = self.read_header(account, artifact_id).ok();
        let blob = dir.join(header.blob_name(artifact_id));
        atomic::persist(&staged.temp, &blob).map_err(|e| with_path(e, &blob))?;
        let path = header_path(&dir, artifact_id);
        // On failure the new blob stays unreferenced (or, if only the directory flush
        // failed, referenced): `open` tells which and cleans up.
        atomic::write(&path, &header.encode(), 0o600).map_err(|e| with_path(e, &path))?;
        if let Some(previous) = previous {
            remove_if_present(&dir.join(previous.blob_name(artifact_id)))?;
        }
        Ok(ArtifactRef {
            account: account.clone(),
            artifact_id: artifact_id.clone(),
            size: staged.size,
            master_key_id: master.id().to_owned(),
        })
    }

    /// Re-wraps one artifact's data key under `keyring`'s active key; `false` if it already
    /// was. The caller holds the exclusive lock.
    fn rewrap(
        &self,
        keyring: &Keyring,
        account: &str,
        artifact_id: &str,
    ) -> Result<bool, ArtifactError> {
        let header = self.read_header(account, artifact_id)?;
        let active = keyring.active();
        if header.master_key_id == active.id() {
            return Ok(false);
        }
        let old = keyring
            .get(&header.master_key_id)
            .ok_or_else(|| unknown_key(account, artifact_id, &header.master_key_id))?;
        let data_key = unwrap_data_key(old, account, artifact_id, &header)?;
        let rewrapped = wrap_data_key(
            active,
            account,
            artifact_id,
            &data_key,
            header.generation,
            header.blob_nonce,
            header.plaintext_len,
        )?;
        let path = header_path(&self.account_dir(account), artifact_id);
        atomic::write(&path, &rewrapped.encode(), 0o600).map_err(|e| with_path(e, &path))?;
        Ok(true)
    }

    /// Every artifact with a header, as (account, artifact id), sorted.
    pub fn list(&self) -> Result<Vec<(String, String)>, ArtifactError> {
        let mut all = Vec::new();
        for account in self.accounts()? {
            for name in file_names(&self.account_dir(&account))? {
                if let Some(id) = header_owner(&name) {
                    all.push((account.clone(), id.to_owned()));
                }
            }
        }
        all.sort();
        Ok(all)
    }

    /// Account folders (anything else in the root is left alone).
    fn accounts(&self) -> Result<Vec<String>, ArtifactError> {
        let mut accounts = Vec::new();
        for entry in fs::read_dir(&self.root).map_err(|e| with_path(e, &self.root))? {
            let entry = entry?;
            if !entry.file_type()?.is_dir() {
                continue;
            }
            if let Some(name) = entry.file_name().to_str() {
                if names::check_account(name).is_ok() {
                    accounts.push(name.to_owned());
                }
            }
        }
        Ok(accounts)
    }

    /// Removes temporary files left by crashed writes (once stale, so a write in progress
    /// in another process keeps its file) and blobs no header points to.
    fn clean(&self) -> Result<(), ArtifactError> {
        let _lock = self.lock(Mode::Exclusive)?;
        for account in self.accounts()? {
            let dir = self.account_dir(&account);
            let names = file_names(&dir)?;
            // For each id with a header: its current blob, or None if the header is
            // unreadable (then its blobs are kept as they are).
            let mut current: BTreeMap<&str, Option<String>> = BTreeMap::new();
            for id in names.iter().filter_map(|n| header_owner(n)) {
                let header = self.read_header(&account, id).ok();
                current.insert(id, header.map(|h| h.blob_name(id)));
            }
            for name in &names {
                let path = dir.join(name);
                if atomic::is_temp(name.as_ref()) {
                    let modified = fs::metadata(&path).and_then(|m| m.modified());
                    let age =
                        modified.map(|t| SystemTime::now().duration_since(t).unwrap_or_default());
                    if age.is_ok_and(|age| age > STALE_TEMP) {
                        remove_if_present(&path)?;
                    }
                } else if let Some(id) = blob_owner(name) {
                    let referenced = match current.get(id) {
                        Some(Some(blob)) => blob == name,
                        Some(None) => true,
                        None => false,
                    };
                    if !referenced {
                        remove_if_present(&path)?;
                    }
                }
            }
        }
        Ok(())
    }

    fn read_header(&self, account: &str, artifact_id: &str) -> Result<Header, ArtifactError> {
        let path = header_path(&self.account_dir(account), artifact_id);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(not_found(account, artifact_id))
            }
            Err(e) => return Err(with_path(e, &path).into()),
        };
        Header::parse(&bytes).map_err(|reason| tampered(account, artifact_id, reason))
    }

    /// The master key `key_id`, reloading the keyring once if it lacks it (another process
    /// may have rotated).
    fn master_key(
        &self,
        account: &str,
        artifact_id: &str,
        key_id: &str,
    ) -> Result<MasterKey, ArtifactError> {
        if let Some(key) = self.keyring().get(key_id) {
            return Ok(key.clone());
        }
        let mut keyring = self.keyring_mut();
        if keyring.get(key_id).is_none() {
            keyring.reload()?;
        }
        keyring
            .get(key_id)
            .cloned()
            .ok_or_else(|| unknown_key(account, artifact_id, key_id))
    }

    fn keyring(&self) -> RwLockReadGuard<'_, Keyring> {
        self.keyring.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn keyring_mut(&self) -> RwLockWriteGuard<'_, Keyring> {
        self.keyring.write().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self, mode: Mode) -> io::Result<File> {
        lock::lock(&self.root.join(".lock"), mode)
    }

    fn account_dir(&self, account: &str) -> PathBuf {
        self.root.join(account)
    }
}

fn check(account: &str, artifact_id: &str) -> Result<(), InvalidName> {
    names::check_account(account)?;
    names::check_artifact(artifact_id)
}

fn header_path(dir: &Path, artifact_id: &str) -> PathBuf {
    dir.join(format!("{artifact_id}.hdr"))
}

/// The artifact id of a header file's name.
fn header_owner(name: &str) -> Option<&str> {
    name.strip_suffix(".hdr")
        .filter(|id| names::check_artifact(id).is_ok())
}

/// The artifact id of a blob file's name (`<id>.<generation>.blob`; ids hold no dots).
fn blob_owner(name: &str) -> Option<&str> {
    let (id, generation) = name.strip_suffix(".blob")?.split_once('.')?;
    let hex = generation.len() == 32 && generation.bytes().all(|b| b.is_ascii_hexdigit());
    (hex && names::check_artifact(id).is_ok()).then_some(id)
}

/// The UTF-8 names of the files in `dir` (other names are none of the store's).
fn file_names(dir: &Path) -> Result<BTreeSet<String>, ArtifactError> {
    let mut names = BTreeSet::new();
    for entry in fs::read_dir(dir).map_err(|e| with_path(e, dir))? {
        let entry = entry?;
        if entry.file_type()?.is_file() {
            if let Ok(name) = entry.file_name().into_string() {
                names.insert(name);
            }
        }
    }
    Ok(names)
}

fn remove_if_present(path: &Path) -> Result<(), ArtifactError> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(with_path(e, path).into()),
        _ => Ok(()),
    }
}

/// A header whose data key is `data_key` wrapped by `master`, with a fresh wrap nonce.
fn wrap_data_key(
    master: &MasterKey,
    account: &str,
    artifact_id: &str,
    data_key: &[u8; 32],
    generation: [u8; 16],
    blob_nonce: [u8; 12],
    plaintext_len: u64,
) -> Result<Header, ArtifactError> {
    let mut header = Header {
        master_key_id: master.id().to_owned(),
        generation,
        blob_nonce,
        plaintext_len,
        wrap_nonce: random::bytes()?,
        wrapped_key: [0; envelope::WRAPPED_LEN],
    };
    let aad = envelope::key_aad(account, artifact_id, &header.authenticated());
    header.wrapped_key = envelope::wrap(master.bytes(), header.wrap_nonce, &aad, data_key);
    Ok(header)
}

fn unwrap_data_key(
    master: &MasterKey,
    account: &str,
    artifact_id: &str,
    header: &Header,
) -> Result<Zeroizing<[u8; 32]>, ArtifactError> {
    let aad = envelope::key_aad(account, artifact_id, &header.authenticated());
    envelope::unwrap(master.bytes(), header.wrap_nonce, &aad, &header.wrapped_key).ok_or_else(
        || {
            tampered(
                account,
                artifact_id,
                "its wrapped data key does not authenticate",
            )
        },
    )
}

fn not_found(account: &str, artifact_id: &str) -> ArtifactError {
    ArtifactError::NotFound {
        account: account.to_owned(),
        artifact_id: artifact_id.to_owned(),
    }
}

fn tampered(account: &str, artifact_id: &str, reason: &'static str) -> ArtifactError {
    ArtifactError::Tampered {
        account: account.to_owned(),
        artifact_id: artifact_id.to_owned(),
        reason,
    }
}

fn unknown_key(account: &str, artifact_id: &str, key_id: &str) -> ArtifactError {
    ArtifactError::UnknownMasterKey {
        account: account.to_owned(),
        artifact_id: artifact_id.to_owned(),
        key_id: key_id.to_owned(),
    }
}

#[cfg(test)]
mod tests;
