//! Cross-process locks on a lock file (`flock` through `std::fs::File::lock`), for the
//! read-modify-write cycles that the service and a `keys` command may run at the same time.
//! A lock is held until the returned file is dropped, and released by the kernel if the
//! process dies, so a crash never leaves one behind.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use crate::atomic::with_path;

/// Shared (readers) or exclusive (a writer).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Shared,
    Exclusive,
}

/// Takes the lock on `path` (created, empty, if missing) and holds it while the file lives.
pub fn lock(path: &Path, mode: Mode) -> io::Result<File> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| with_path(e, path))?;
    match mode {
        Mode::Shared => file.lock_shared(),
        Mode::Exclusive => file.lock(),
    }
    .map_err(|e| with_path(e, path))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readers_share_writers_exclude() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(".lock");
        // Each open is its own file description, as another process's would be.
        let probe = || File::open(&path).unwrap();
        let reader = lock(&path, Mode::Shared).unwrap();
        assert!(probe().try_lock_shared().is_ok());
        assert!(probe().try_lock().is_err());
        drop(reader);
        let writer = lock(&path, Mode::Exclusive).unwrap();
        assert!(probe().try_lock_shared().is_err());
        drop(writer);
        assert!(probe().try_lock().is_ok());
    }
}
