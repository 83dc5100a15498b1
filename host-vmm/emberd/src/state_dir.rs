//! The worker's state directory (mode 0700): its private key and certificate from its
//! last registration (`worker.key`, `worker.pem`), the key its code cache is encrypted
//! under (`cache.key`) and the cache itself (`artifacts/`). Secrets are 0600 and written
//! atomically (a temporary file renamed into place).

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

use ember_core::keydir;
use zeroize::Zeroizing;

/// The private key of the worker's certificate.
pub const KEY_FILE: &str = "worker.key";
/// The worker's certificate, signed by control's CA.
pub const CERT_FILE: &str = "worker.pem";
/// The code cache's AES-256-GCM key.
pub const CACHE_KEY_FILE: &str = "cache.key";
/// The code cache.
pub const ARTIFACTS_DIR: &str = "artifacts";

/// Creates `dir` (and parents) readable by the owner only.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
}

/// Replaces `path` with `bytes`, mode 0600, atomically.
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::other(format!("{} is not a file name", path.display())))?;
    let temp = path.with_file_name(format!(".tmp-{}", name.to_string_lossy()));
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        })
        .and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written.map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

/// The 32-byte key in `path`, made on first use; refused when other users may read it.
pub fn load_or_create_key(path: &Path) -> io::Result<Zeroizing<[u8; 32]>> {
    match keydir::read_private(path)? {
        Some(bytes) => {
            let key: [u8; 32] = bytes.as_slice().try_into().map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not a 32-byte key", path.display()),
                )
            })?;
            Ok(Zeroizing::new(key))
        }
        None => {
            let mut key = Zeroizing::new([0u8; 32]);
            getrandom::fill(key.as_mut()).map_err(io::Error::other)?;
            write_private(path, key.as_slice())?;
            Ok(key)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_secrets_private_and_keys_stable() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        private_dir(&state).unwrap();
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        let key = load_or_create_key(&state.join(CACHE_KEY_FILE)).unwrap();
        assert_eq!(mode(&state.join(CACHE_KEY_FILE)), 0o600);
        assert_eq!(
            *load_or_create_key(&state.join(CACHE_KEY_FILE)).unwrap(),
            *key
        );
        write_private(&state.join(CERT_FILE), b"pem").unwrap();
        assert_eq!(fs::read(state.join(CERT_FILE)).unwrap(), b"pem");
        assert_eq!(
            fs::read_dir(&state).unwrap().count(),
            2,
            "no temporary file left"
        );
        write_private(&state.join("short.key"), b"short").unwrap();
        let err = load_or_create_key(&state.join("short.key")).unwrap_err();
        assert!(err.to_string().contains("not a 32-byte key"), "{err}");
        fs::set_permissions(
            state.join(CACHE_KEY_FILE),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        let err = load_or_create_key(&state.join(CACHE_KEY_FILE)).unwrap_err();
        assert!(err.to_string().contains("mode 640"), "{err}");
    }
}
