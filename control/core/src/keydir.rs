//! The data directory's `keys/` folder, where the control plane keeps its own secrets (the
//! master keyring, the grant signing secret). It is readable by its owner only, every file
//! in it is written atomically with mode 0600, and a lock file serialises
//! read-modify-write cycles across processes: `ember-control keys rotate` may run while the
//! service does, and losing a master key to a race would lose every artifact wrapped by it.

use std::fs::{self, File};
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

use crate::atomic::{self, with_path};
use crate::lock;

/// The folder's name inside the data directory.
pub const DIR: &str = "keys";

/// The `keys/` folder of one data directory.
#[derive(Clone, Debug)]
pub struct KeyDir {
    dir: PathBuf,
}

impl KeyDir {
    /// Opens `data_dir/keys`, creating it (mode 0700) if needed.
    pub fn open(data_dir: &Path) -> io::Result<KeyDir> {
        let dir = data_dir.join(DIR);
        atomic::private_dir(&dir).map_err(|e| with_path(e, &dir))?;
        Ok(KeyDir { dir })
    }

    /// The path of `name` in the folder.
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Takes the folder's exclusive lock; it is released when the returned file is dropped.
    pub fn lock(&self) -> io::Result<File> {
        lock::lock(&self.path(".lock"), lock::Mode::Exclusive)
    }

    /// The contents of `name`, or `None` if it does not exist. A secret that others may
    /// read or write is refused rather than used: it may already have leaked.
    pub fn read(&self, name: &str) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
        read_private(&self.path(name))
    }

    /// Atomically replaces `name` with `bytes`, mode 0600.
    pub fn write(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let path = self.path(name);
        atomic::write(&path, bytes, 0o600).map_err(|e| with_path(e, &path))
    }
}

/// The contents of the secret file `path`, or `None` if it does not exist; refused when
/// others may read or write it (see [`KeyDir::read`]).
pub fn read_private(path: &Path) -> io::Result<Option<Zeroizing<Vec<u8>>>> {
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(with_path(e, path)),
    };
    if mode & 0o077 != 0 {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!(
                "{} is accessible to other users (mode {mode:o}); it must be 0600 \
                 (chmod 600 it after making sure it has not leaked)",
                path.display()
            ),
        ));
    }
    match fs::read(path) {
        Ok(bytes) => Ok(Some(Zeroizing::new(bytes))),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(with_path(e, path)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_secrets_others_can_read() {
        let data = tempfile::tempdir().unwrap();
        let keys = KeyDir::open(data.path()).unwrap();
        keys.write("secret", b"s3cret").unwrap();
        fs::set_permissions(keys.path("secret"), fs::Permissions::from_mode(0o644)).unwrap();
        let err = keys.read("secret").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
        assert!(err.to_string().contains("mode 644"), "{err}");
        fs::set_permissions(keys.path("secret"), fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            keys.read("secret").unwrap().as_deref().map(|b| &b[..]),
            Some(&b"s3cret"[..])
        );
    }

    #[test]
    fn keeps_secrets_private() {
        let data = tempfile::tempdir().unwrap();
        let keys = KeyDir::open(data.path()).unwrap();
        assert_eq!(keys.read("secret").unwrap(), None);
        keys.write("secret", b"s3cret").unwrap();
        assert_eq!(keys.read("secret").unwrap().unwrap().as_slice(), b"s3cret");
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&data.path().join(DIR)), 0o700);
        assert_eq!(mode(&keys.path("secret")), 0o600);
    }
}
