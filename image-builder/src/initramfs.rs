//! The initramfs: a gzip-compressed cpio (newc) archive, every entry owned by root with
//! mtime 0 so that the same inputs give the same bytes. gzip because every kernel
//! decompresses it (`CONFIG_RD_GZIP`), including one given with `--kernel`.

use anyhow::Result;
use cpio::newc::{Builder, ModeFileType};
use flate2::write::GzEncoder;
use std::collections::BTreeSet;
use std::io::Write;

/// One file of the archive; its path has no leading `/`.
pub struct File {
    pub path: String,
    pub mode: u32,
    pub bytes: Vec<u8>,
}

/// Packs `files` with the directories above them and `/dev/console` (the console emberd
/// writes to before it mounts devtmpfs).
pub fn pack(files: &[File]) -> Result<Vec<u8>> {
    let mut dirs = BTreeSet::from(["dev".to_owned()]);
    for file in files {
        let mut parent = file.path.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            dirs.insert(dir.to_owned());
            parent = dir;
        }
    }
    let mut out = GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut ino = 1;
    let mut next = || {
        ino += 1;
        ino
    };
    // BTreeSet order puts a directory before everything under it.
    for dir in &dirs {
        Builder::new(dir)
            .ino(next())
            .mode(0o755)
            .set_mode_file_type(ModeFileType::Directory)
            .nlink(2)
            .write(&mut out, 0)
            .finish()?;
    }
    Builder::new("dev/console")
        .ino(next())
        .mode(0o600)
        .set_mode_file_type(ModeFileType::Char)
        .rdev_major(5)
        .rdev_minor(1)
        .nlink(1)
        .write(&mut out, 0)
        .finish()?;
    for file in files {
        let size = u32::try_from(file.bytes.len())?;
        let mut writer = Builder::new(&file.path)
            .ino(next())
            .mode(file.mode)
            .set_mode_file_type(ModeFileType::Regular)
            .nlink(1)
            .write(&mut out, size);
        writer.write_all(&file.bytes)?;
        writer.finish()?;
    }
    cpio::newc::trailer(&mut out)?;
    Ok(out.finish()?)
}
