//! The kernel and its modules: Debian's kernel package (fetched, or given as a `.deb`),
//! unpacked once into the cache, or a kernel file and modules directory given directly.

use crate::{apt, deb};
use anyhow::{bail, Context, Result};
use std::fs;
use std::path::{Path, PathBuf};

/// Where the kernel comes from.
pub enum Source {
    /// The package `linux-image-amd64` depends on, from apt.
    Debian,
    /// A kernel package file.
    Deb(PathBuf),
    /// A kernel image and its `/lib/modules/RELEASE` directory.
    Files { kernel: PathBuf, modules: PathBuf },
}

/// A kernel ready to pack.
pub struct Kernel {
    pub vmlinuz: PathBuf,
    /// `/lib/modules/RELEASE` (with `modules.builtin` and the `.ko` files).
    pub modules_dir: PathBuf,
    /// The kernel's release, `uname -r`.
    pub release: String,
    /// The package's version, or `unpackaged` for `Source::Files`.
    pub version: String,
}

impl Kernel {
    pub fn load(source: &Source, cache: &Path) -> Result<Kernel> {
        match source {
            Source::Debian => {
                let name = apt::dependency_of("linux-image-amd64")?;
                let package = apt::fetch(&name, cache)?;
                Kernel::from_deb(&package.deb, cache)
            }
            Source::Deb(path) => Kernel::from_deb(path, cache),
            Source::Files { kernel, modules } => {
                let release = dir_name(modules)?;
                Ok(Kernel {
                    vmlinuz: kernel.clone(),
                    modules_dir: modules.clone(),
                    release,
                    version: "unpackaged".into(),
                })
            }
        }
    }

    /// Unpacks `./boot/` and `./lib/modules/` of the package into the cache (once: a
    /// marker file says the unpacking finished) and finds the kernel and its release.
    fn from_deb(path: &Path, cache: &Path) -> Result<Kernel> {
        let control = deb::control(path)?;
        let name = control
            .field("Package")
            .context("the package has no name")?;
        let version = control
            .field("Version")
            .context("the package has no version")?;
        let dir = cache.join(format!("{name}_{version}"));
        let marker = dir.join(".unpacked");
        if !marker.exists() {
            if dir.exists() {
                fs::remove_dir_all(&dir)?;
            }
            deb::extract(path, &["boot/", "lib/modules/"], &dir)?;
            fs::write(&marker, b"")?;
        }
        let modules_root = dir.join("lib/modules");
        let mut releases = fs::read_dir(&modules_root)
            .with_context(|| format!("{}: no lib/modules in the package", path.display()))?
            .map(|e| Ok(e?.file_name().to_string_lossy().into_owned()))
            .collect::<Result<Vec<_>>>()?;
        let release = match releases.as_mut_slice() {
            [one] => std::mem::take(one),
            _ => bail!(
                "{}: expected one kernel release, found {releases:?}",
                path.display()
            ),
        };
        let vmlinuz = dir.join("boot").join(format!("vmlinuz-{release}"));
        if !vmlinuz.exists() {
            bail!("{}: no boot/vmlinuz-{release}", path.display());
        }
        Ok(Kernel {
            vmlinuz,
            modules_dir: modules_root.join(&release),
            release,
            version: version.to_owned(),
        })
    }
}

fn dir_name(path: &Path) -> Result<String> {
    let name = path
        .canonicalize()
        .with_context(|| format!("modules directory {}", path.display()))?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    name.with_context(|| format!("{}: expected /lib/modules/RELEASE", path.display()))
}
