//! Master keys: the top of the key hierarchy. Each artifact is encrypted under its own data
//! key, and only the data key is encrypted ("wrapped") by a master key, so rotating a master
//! key re-wraps 48-byte keys instead of re-encrypting code.
//!
//! A [`Keyring`] holds one or more 256-bit master keys, oldest first; the newest is the
//! *active* key that wraps new data keys, the older ones stay to unwrap data keys that were
//! not re-wrapped yet. Keys come from one of three [`KeySource`]s:
//!
//! - the data directory (default): `DIR/keys/master.json`, mode 0600, created with one key
//!   on first use; [`Keyring::rotate`] and [`Keyring::retire`] rewrite it atomically under
//!   a lock, so a `keys rotate` command can run beside the service;
//! - a file the operator manages, or
//! - an environment variable ([`ENV_VAR`]): both hold standard base64 keys (44 characters,
//!   e.g. from `openssl rand -base64 32`) separated by commas or white space, oldest
//!   first. Rotating such a keyring means appending a key there and restarting.
//!
//! A key's id is derived from the key itself (the first 8 bytes of a domain-separated
//! SHA-256, as hex), so the same key has the same id whichever source it comes from, and a
//! mistyped key is caught on load instead of at the first decryption.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use crate::atomic::with_path;
use crate::keydir::{self, KeyDir};
use crate::random;

/// The environment variable the service reads master keys from, if told to.
pub const ENV_VAR: &str = "EMBER_MASTER_KEY";

/// The keyring's file name inside `DIR/keys/`.
pub const KEYRING_FILE: &str = "master.json";

/// Version of the keyring file's format.
const FORMAT: u32 = 1;

/// One 256-bit master key.
#[derive(Clone)]
pub struct MasterKey {
    id: String,
    created: u64,
    key: Zeroizing<[u8; 32]>,
}

impl MasterKey {
    fn new(key: Zeroizing<[u8; 32]>, created: u64) -> MasterKey {
        MasterKey {
            id: key_id(&key),
            created,
            key,
        }
    }

    /// The key's id, recorded beside everything it wraps.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// When the key was made (Unix seconds; 0 when given from outside).
    pub fn created(&self) -> u64 {
        self.created
    }

    /// The key material, for the envelope encryption only.
    pub fn bytes(&self) -> &[u8; 32] {
        &self.key
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MasterKey")
            .field("id", &self.id)
            .field("created", &self.created)
            .finish_non_exhaustive()
    }
}

/// `mk-` and 16 hex digits of SHA-256("ember master key id\0" ‖ key).
fn key_id(key: &[u8; 32]) -> String {
    let digest = Sha256::new()
        .chain_update(b"ember master key id\0")
        .chain_update(key)
        .finalize();
    format!("mk-{}", random::hex(&digest[..8]))
}

/// Where a keyring's keys come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum KeySource {
    /// `data_dir/keys/master.json`, managed by ember (created, rotated, retired).
    DataDir(PathBuf),
    /// A file of base64 keys, oldest first, managed by the operator.
    File(PathBuf),
    /// An environment variable (normally [`ENV_VAR`]) holding base64 keys, oldest first.
    Env(String),
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::DataDir(dir) => {
                write!(f, "{}", dir.join(keydir::DIR).join(KEYRING_FILE).display())
            }
            KeySource::File(path) => write!(f, "{}", path.display()),
            KeySource::Env(var) => write!(f, "${var}"),
        }
    }
}

/// Why keys could not be loaded or changed.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("master keys in {location}: {reason}")]
    Invalid { location: String, reason: String },
    #[error("environment variable {0} is not set (or not UTF-8)")]
    MissingEnv(String),
    #[error("master keys in {0} are managed outside ember: add a key there (newest last) or remove one, then restart")]
    NotManaged(String),
    #[error("master key {0} is not in the keyring")]
    UnknownKey(String),
    #[error("master key {0} is the active key; rotate before retiring it")]
    Active(String),
}

/// Master keys, oldest first; the last is the active one.
#[derive(Clone, Debug)]
pub struct Keyring {
    keys: Vec<MasterKey>,
    source: KeySource,
    /// The keyring file's modification time when it was read (data directory only).
    file_mtime: Option<SystemTime>,
}

/// The keyring file's layout.
#[derive(Serialize, Deserialize)]
struct KeyringFile {
    format: u32,
    keys: Vec<KeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct KeyEntry {
    id: String,
    created: u64,
    /// Standard base64 of the 32 key bytes.
    key: Zeroizing<String>,
}

impl Keyring {
    /// Loads the keyring from `source`; a data directory's is created with one fresh key
    /// if it does not exist yet.
    pub fn open(source: KeySource) -> Result<Keyring, KeyError> {
        let keys = match &source {
            KeySource::DataDir(dir) => {
                let keydir = KeyDir::open(dir)?;
                let _lock = keydir.lock()?;
                match read_managed(&keydir, &source)? {
                    Some(keys) => keys,
                    None => {
                        let keys = vec![MasterKey::new(random::key()?, now())];
                        write_managed(&keydir, &keys)?;
                        keys
                    }
                }
            }
            KeySource::File(path) => {
                let bytes = keydir::read_private(path)?
                    .ok_or_else(|| with_path(io::Error::from(io::ErrorKind::NotFound), path))?;
                let text = std::str::from_utf8(&bytes)
                    .map_err(|_| invalid(&source, "the file is not UTF-8 text"))?;
                parse_list(text, &source)?
            }
            KeySource::Env(var) => {
                let text = std::env::var(var).map_err(|_| KeyError::MissingEnv(var.clone()))?;
                parse_list(&text, &source)?
            }
        };
        let file_mtime = managed_file_mtime(&source);
        Ok(Keyring {
            keys,
            source,
            file_mtime,
        })
    }

    /// [`Keyring::open`] of `data_dir`'s own keyring.
    pub fn load_or_create(data_dir: &Path) -> Result<Keyring, KeyError> {
        Keyring::open(KeySource::DataDir(data_dir.to_owned()))
    }

    /// Where the keys come from.
    pub fn source(&self) -> &KeySource {
        &self.source
    }

    /// The key that wraps new data keys: the newest.
    pub fn active(&self) -> &MasterKey {
        // Every constructor refuses an empty keyring.
        &self.keys[self.keys.len() - 1]
    }

    /// The key with id `id`, if the keyring still holds it.
    pub fn get(&self, id: &str) -> Option<&MasterKey> {
        self.keys.iter().find(|k| k.id == id)
    }

    /// All keys, oldest first.
    pub fn keys(&self) -> &[MasterKey] {
        &self.keys
    }

    /// Reads the keys again from the source (another process may have rotated them).
    pub fn reload(&mut self) -> Result<(), KeyError> {
        *self = Keyring::open(self.source.clone())?;
        Ok(())
    }

    /// Reloads the keys if the data directory's keyring file changed since it was read (a
    /// `keys rotate` beside the service); costs one `stat`. A file that cannot be read
    /// any more leaves the keys as they are rather than starting a new keyring.
    pub fn refresh(&mut self) -> Result<(), KeyError> {
        let mtime = managed_file_mtime(&self.source);
        if mtime.is_some() && mtime != self.file_mtime {
            self.reload()?;
        }
        Ok(())
    }

    /// Adds a fresh key and makes it the active one; older keys stay until retired. Only
    /// for a data directory's keyring.
    pub fn rotate(&mut self) -> Result<&MasterKey, KeyError> {
        self.modify(|keys| {
            keys.push(MasterKey::new(random::key()?, now()));
            Ok(())
        })?;
        Ok(self.active())
    }

    /// Removes key `id`, which must not be the active one. Do this only once nothing is
    /// wrapped by it any more (after the artifact store's `rewrap_all`
    /// reported no failures). Only for a data directory's keyring.
    pub fn retire(&mut self, id: &str) -> Result<(), KeyError> {
        self.modify(|keys| {
            let index = keys
                .iter()
                .position(|k| k.id == id)
                .ok_or_else(|| KeyError::UnknownKey(id.to_owned()))?;
            if index == keys.len() - 1 {
                return Err(KeyError::Active(id.to_owned()));
            }
            keys.remove(index);
            Ok(())
        })
    }

    /// Read-modify-write of the keyring file under the key directory's lock, starting from
    /// what is on disk (not what this process loaded earlier).
    fn modify(
        &mut self,
        change: impl FnOnce(&mut Vec<MasterKey>) -> Result<(), KeyError>,
    ) -> Result<(), KeyError> {
        let KeySource::DataDir(dir) = &self.source else {
            return Err(KeyError::NotManaged(self.source.to_string()));
        };
        let keydir = KeyDir::open(dir)?;
        let _lock = keydir.lock()?;
        let mut keys = read_managed(&keydir, &self.source)?.ok_or_else(|| KeyError::Invalid {
            location: self.source.to_string(),
            reason: "the keyring file has disappeared".into(),
        })?;
        change(&mut keys)?;
        write_managed(&keydir, &keys)?;
        self.keys = keys;
        self.file_mtime = managed_file_mtime(&self.source);
        Ok(())
    }
}

/// When the data directory's keyring file last changed; `None` for other sources.
fn managed_file_mtime(source: &KeySource) -> Option<SystemTime> {
    let KeySource::DataDir(dir) = source else {
        return None;
    };
    let path = dir.join(keydir::DIR).join(KEYRING_FILE);
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn invalid(source: &KeySource, reason: impl Into<String>) -> KeyError {
    KeyError::Invalid {
        location: source.to_string(),
        reason: reason.into(),
    }
}

fn decode_key(text: &str, source: &KeySource) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let bytes = Zeroizing::new(
        base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|_| invalid(source, "a key is not valid base64"))?,
    );
    let mut key = Zeroizing::new([0u8; 32]);
    if bytes.len() != key.len() {
        return Err(invalid(
            source,
            format!("a key has {} bytes; master keys have 32", bytes.len()),
        ));
    }
    key.copy_from_slice(&bytes);
    Ok(key)
}

/// Checks a loaded list: not empty, no key twice.
fn checked(keys: Vec<MasterKey>, source: &KeySource) -> Result<Vec<MasterKey>, KeyError> {
    if keys.is_empty() {
        return Err(invalid(source, "no key"));
    }
    for (i, key) in keys.iter().enumerate() {
        if keys[..i].iter().any(|k| k.id == key.id) {
            return Err(invalid(source, format!("key {} appears twice", key.id)));
        }
    }
    Ok(keys)
}

/// Base64 keys separated by commas or white space, oldest first.
fn parse_list(text: &str, source: &KeySource) -> Result<Vec<MasterKey>, KeyError> {
    let keys = text
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|t| !t.is_empty())
        .map(|t| Ok(MasterKey::new(decode_key(t, source)?, 0)))
        .collect::<Result<Vec<_>, KeyError>>()?;
    checked(keys, source)
}

fn read_managed(keydir: &KeyDir, source: &KeySource) -> Result<Option<Vec<MasterKey>>, KeyError> {
    let Some(bytes) = keydir.read(KEYRING_FILE)? else {
        return Ok(None);
    };
    let file: KeyringFile = serde_json::from_slice(&bytes)
        .map_err(|e| invalid(source, format!("not a keyring: {e}")))?;
    if file.format != FORMAT {
        return Err(invalid(source, format!("unknown format {}", file.format)));
    }
    let keys = file
        .keys
        .iter()
        .map(|entry| {
            let key = MasterKey::new(decode_key(&entry.key, source)?, entry.created);
            if key.id != entry.id {
                return Err(invalid(
                    source,
                    format!("key {} does not match its id (corrupt file?)", entry.id),
                ));
            }
            Ok(key)
        })
        .collect::<Result<Vec<_>, KeyError>>()?;
    checked(keys, source).map(Some)
}

fn write_managed(keydir: &KeyDir, keys: &[MasterKey]) -> Result<(), KeyError> {
    let file = KeyringFile {
        format: FORMAT,
        keys: keys
            .iter()
            .map(|k| KeyEntry {
                id: k.id.clone(),
                created: k.created,
                key: Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(k.bytes())),
            })
            .collect(),
    };
    let json = Zeroizing::new(serde_json::to_vec_pretty(&file).map_err(io::Error::other)?);
    keydir.write(KEYRING_FILE, &json)?;
    Ok(())
}

/// The 32-byte secret in `DIR/keys/<name>` (standard base64, 0600), made on first use:
/// what the grant and role-credential issuers sign with.
pub fn load_or_create_secret(data_dir: &Path, name: &str) -> Result<Zeroizing<[u8; 32]>, KeyError> {
    let keydir = KeyDir::open(data_dir)?;
    let _lock = keydir.lock()?;
    if let Some(text) = keydir.read(name)? {
        let invalid = || KeyError::Invalid {
            location: keydir.path(name).display().to_string(),
            reason: "not 32 bytes of base64".into(),
        };
        let bytes = Zeroizing::new(STANDARD.decode(text.trim_ascii()).map_err(|_| invalid())?);
        let secret: [u8; 32] = bytes.as_slice().try_into().map_err(|_| invalid())?;
        return Ok(Zeroizing::new(secret));
    }
    let secret = random::key()?;
    keydir.write(name, STANDARD.encode(*secret).as_bytes())?;
    Ok(secret)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn creates_once_then_loads_the_same_keys() {
        let data = tempfile::tempdir().unwrap();
        let ring = Keyring::load_or_create(data.path()).unwrap();
        assert_eq!(ring.keys().len(), 1);
        assert!(ring.active().id().starts_with("mk-"));
        assert!(ring.active().created() > 1_700_000_000);
        assert_eq!(ring.source(), &KeySource::DataDir(data.path().to_owned()));
        assert_eq!(ring.active().id().len(), 3 + 16);
        let path = data.path().join("keys").join(KEYRING_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let again = Keyring::load_or_create(data.path()).unwrap();
        assert_eq!(again.active().bytes(), ring.active().bytes());
        // Another data directory gets another key.
        let other = tempfile::tempdir().unwrap();
        let other = Keyring::load_or_create(other.path()).unwrap();
        assert_ne!(other.active().id(), ring.active().id());
        // Key material never shows in debug output.
        let debug = format!("{ring:?}");
        let b64 = base64::engine::general_purpose::STANDARD.encode(ring.active().bytes());
        assert!(
            !debug.contains(&b64) && !debug.contains("key: ["),
            "{debug}"
        );
    }

    #[test]
    fn rotates_and_retires_on_disk() {
        let data = tempfile::tempdir().unwrap();
        let mut ring = Keyring::load_or_create(data.path()).unwrap();
        let first = ring.active().id().to_owned();
        let second = ring.rotate().unwrap().id().to_owned();
        assert_ne!(first, second);
        assert_eq!(ring.keys().len(), 2);
        assert!(ring.get(&first).is_some());

        // Another process's view catches up on reload.
        let mut other = Keyring::load_or_create(data.path()).unwrap();
        assert_eq!(other.active().id(), second);
        let third = ring.rotate().unwrap().id().to_owned();
        assert_eq!(other.active().id(), second);
        other.reload().unwrap();
        assert_eq!(other.active().id(), third);
        // Rotating from a stale view keeps the keys others added.
        let mut stale = other.clone();
        ring.rotate().unwrap();
        stale.rotate().unwrap();
        assert_eq!(stale.keys().len(), 5);

        assert!(matches!(
            ring.retire("mk-0000000000000000"),
            Err(KeyError::UnknownKey(_))
        ));
        ring.reload().unwrap();
        let active = ring.active().id().to_owned();
        assert!(matches!(ring.retire(&active), Err(KeyError::Active(_))));
        ring.retire(&first).unwrap();
        assert!(ring.get(&first).is_none());
        let reloaded = Keyring::load_or_create(data.path()).unwrap();
        assert!(reloaded.get(&first).is_none());
        assert_eq!(reloaded.keys().len(), 4);
        assert_eq!(reloaded.active().id(), active);
    }

    #[test]
    fn reads_operator_managed_key_files() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (random::key().unwrap(), random::key().unwrap());
        let encode = |k: &[u8; 32]| base64::engine::general_purpose::STANDARD.encode(k);
        let path = dir.path().join("master.keys");
        std::fs::write(&path, format!("{}\n{},\n", encode(&old), encode(&new))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let mut ring = Keyring::open(KeySource::File(path.clone())).unwrap();
        assert_eq!(ring.keys().len(), 2);
        assert_eq!(ring.active().bytes(), &*new);
        assert_eq!(ring.active().id(), key_id(&new));
        assert_eq!(ring.keys()[0].id(), key_id(&old));
        assert_eq!(ring.active().created(), 0);
        assert_eq!(ring.source().to_string(), path.display().to_string());
        assert!(matches!(ring.rotate(), Err(KeyError::NotManaged(_))));
        assert!(matches!(
            ring.retire(&key_id(&old)),
            Err(KeyError::NotManaged(_))
        ));

        for (text, reason) in [
            ("", "no key"),
            ("not base64!", "not valid base64"),
            ("AAAA", "has 3 bytes"),
            (&format!("{0} {0}", encode(&old)), "appears twice"),
        ] {
            std::fs::write(&path, text).unwrap();
            let err = Keyring::open(KeySource::File(path.clone())).unwrap_err();
            assert!(err.to_string().contains(reason), "{text:?}: {err}");
        }
    }

    #[test]
    fn refuses_a_key_file_others_can_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("master.keys");
        let key = base64::engine::general_purpose::STANDARD.encode(*random::key().unwrap());
        std::fs::write(&path, key).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = Keyring::open(KeySource::File(path.clone())).unwrap_err();
        assert!(err.to_string().contains("mode 640"), "{err}");
        assert!(matches!(
            Keyring::open(KeySource::File(dir.path().join("absent"))),
            Err(KeyError::Io(e)) if e.kind() == io::ErrorKind::NotFound
        ));
    }

    #[test]
    fn a_missing_variable_is_a_clear_error() {
        let err = Keyring::open(KeySource::Env("EMBER_TEST_NO_SUCH_VARIABLE".into())).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable EMBER_TEST_NO_SUCH_VARIABLE is not set (or not UTF-8)"
        );
    }

    #[test]
    fn refuses_corrupt_keyring_files() {
        let data = tempfile::tempdir().unwrap();
        Keyring::load_or_create(data.path()).unwrap();
        let path = data.path().join("keys").join(KEYRING_FILE);
        let json = std::fs::read_to_string(&path).unwrap();
        let file: serde_json::Value = serde_json::from_str(&json).unwrap();
        // Change one character of the key: its id no longer matches.
        let key = file["keys"][0]["key"].as_str().unwrap();
        let flipped = if key.starts_with('A') { "B" } else { "A" };
        std::fs::write(
            &path,
            json.replacen(key, &format!("{flipped}{}", &key[1..]), 1),
        )
        .unwrap();
        let err = Keyring::load_or_create(data.path()).unwrap_err();
        assert!(err.to_string().contains("does not match its id"), "{err}");
        std::fs::write(&path, "{").unwrap();
        let err = Keyring::load_or_create(data.path()).unwrap_err();
        assert!(err.to_string().contains("not a keyring"), "{err}");
    }
}
