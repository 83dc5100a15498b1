//! Crash-safe file writes: a reader (or a restart after a crash) sees either the old file or
//! the complete new one, never a prefix. Every write goes to a temporary file in the same
//! directory, is flushed to disk, renamed over the target and the directory entry flushed
//! too. Temporary files carry [`TEMP_PREFIX`], so nothing ever mistakes one for data.

use std::ffi::OsStr;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::random;

/// Names of temporary files start with this; they are never read as data.
pub const TEMP_PREFIX: &str = ".tmp-";

/// Whether a directory entry is a temporary file (a finished write never leaves one).
pub fn is_temp(name: &OsStr) -> bool {
    name.as_encoded_bytes().starts_with(TEMP_PREFIX.as_bytes())
}

/// Atomically replaces `path` with `bytes`, created with permissions `mode`.
pub fn write(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = parent(path)?;
    let temp = write_temp(dir, bytes, mode)?;
    persist(&temp, path)
}

/// Writes `bytes` to a new temporary file in `dir`, flushed to disk; [`persist`] moves it
/// into place.
pub fn write_temp(dir: &Path, bytes: &[u8], mode: u32) -> io::Result<PathBuf> {
    let temp = dir.join(format!(
        "{TEMP_PREFIX}{}",
        random::hex(&random::bytes::<12>()?)
    ));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&temp);
        return Err(e);
    }
    Ok(temp)
}

/// Renames a file written by [`write_temp`] over `path` and flushes the directory.
pub fn persist(temp: &Path, path: &Path) -> io::Result<()> {
    if let Err(e) = fs::rename(temp, path) {
        let _ = fs::remove_file(temp);
        return Err(e);
    }
    sync_dir(parent(path)?)
}

/// Flushes a directory's entries (creations, renames, removals) to disk.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and its missing parents, readable by the owner only.
pub fn private_dir(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)
}

/// Adds the path to an I/O error's message.
pub fn with_path(e: io::Error, path: &Path) -> io::Error {
    io::Error::new(e.kind(), format!("{}: {e}", path.display()))
}

fn parent(path: &Path) -> io::Result<&Path> {
    path.parent()
        .filter(|p| !p.as_os_str().is_empty())
        .ok_or_else(|| io::Error::other(format!("{} has no parent directory", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn replaces_whole_files_with_the_given_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        write(&path, b"first", 0o600).unwrap();
        write(&path, b"second", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"second");
        let mode = fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![OsStr::new("f").to_owned()]);
    }

    #[test]
    fn temp_files_are_recognisable_and_cleaned_up_on_failure() {
        let dir = tempfile::tempdir().unwrap();
        let temp = write_temp(dir.path(), b"x", 0o600).unwrap();
        assert!(is_temp(temp.file_name().unwrap()));
        assert!(!is_temp(OsStr::new("artifact.hdr")));
        // Renaming into a missing directory fails and removes the temporary file.
        let err = persist(&temp, &dir.path().join("missing/f")).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(!temp.exists());
    }
}
