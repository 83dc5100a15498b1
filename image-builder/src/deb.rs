//! Reading Debian packages (`.deb`) with crates instead of dpkg: a `.deb` is an `ar`
//! archive whose `control.tar.*` and `data.tar.*` members are tarballs, compressed with
//! xz (bookworm's default), gzip or not at all.

use anyhow::{bail, Context, Result};
use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;

/// Opens the `prefix.tar[.xz|.gz]` member (`control` or `data`) of the package at `deb`
/// and hands its tar archive, decompressed as it streams, to `f`.
pub fn with_member<T>(
    deb: &Path,
    prefix: &str,
    f: impl FnOnce(&mut tar::Archive<&mut dyn Read>) -> Result<T>,
) -> Result<T> {
    let file = File::open(deb).with_context(|| format!("opening {}", deb.display()))?;
    let mut archive = ar::Archive::new(BufReader::new(file));
    while let Some(entry) = archive.next_entry() {
        let entry = entry.with_context(|| format!("reading the ar archive {}", deb.display()))?;
        let name = String::from_utf8_lossy(entry.header().identifier()).into_owned();
        let Some(compression) = name
            .strip_prefix(prefix)
            .and_then(|n| n.strip_prefix(".tar"))
        else {
            continue;
        };
        let mut reader: Box<dyn Read> = match compression {
            ".xz" => Box::new(liblzma::read::XzDecoder::new(entry)),
            ".gz" => Box::new(flate2::read::GzDecoder::new(entry)),
            "" => Box::new(entry),
            other => bail!(
                "{}: member {name} uses compression {other:?}, which ember-image does not read \
                 (xz, gzip or none)",
                deb.display()
            ),
        };
        let mut tar = tar::Archive::new(&mut *reader as &mut dyn Read);
        return f(&mut tar);
    }
    bail!(
        "{}: no {prefix}.tar member: not a Debian package",
        deb.display()
    )
}

/// The `control` file of the package: its fields, such as `Package`, `Version`, `Depends`.
pub fn control(deb: &Path) -> Result<Control> {
    with_member(deb, "control", |tar| {
        for entry in tar.entries()? {
            let mut entry = entry?;
            if entry.path()?.file_name().is_some_and(|n| n == "control") {
                let mut text = String::new();
                entry.read_to_string(&mut text)?;
                return Ok(Control { text });
            }
        }
        bail!("{}: control.tar has no control file", deb.display())
    })
}

/// A package's control file (RFC 822-style fields).
pub struct Control {
    text: String,
}

impl Control {
    /// The value of `field` (a single-line field), if present.
    pub fn field(&self, field: &str) -> Option<&str> {
        self.text.lines().find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key == field).then(|| value.trim())
        })
    }
}

/// Extracts the entries of the package's data under any of `prefixes` (such as `./boot/`)
/// into `dest`, keeping their paths (without the leading `./`).
pub fn extract(deb: &Path, prefixes: &[&str], dest: &Path) -> Result<()> {
    std::fs::create_dir_all(dest).with_context(|| format!("creating {}", dest.display()))?;
    with_member(deb, "data", |tar| {
        for entry in tar.entries()? {
            let mut entry = entry?;
            let path = entry.path()?.into_owned();
            let rel = path.strip_prefix(".").unwrap_or(&path);
            let rel_str = rel.to_string_lossy();
            if prefixes.iter().any(|p| rel_str.starts_with(p)) {
                entry.unpack_in(dest).with_context(|| {
                    format!("extracting {} from {}", rel.display(), deb.display())
                })?;
            }
        }
        Ok(())
    })
}
