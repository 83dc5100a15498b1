//! Fetching Debian packages with `apt-get download` into a cache directory, so that a
//! repeated build neither downloads nor asks apt anything once the package is there.

use anyhow::{bail, Context, Result};
use std::path::{Path, PathBuf};
use std::process::Command;

/// A package version as apt names it, and where its `.deb` is cached.
pub struct Package {
    pub name: String,
    pub version: String,
    pub deb: PathBuf,
}

/// The candidate version of `name` and the field `field` of it, from apt's local lists
/// (`apt-cache show`, no network).
fn show(name: &str) -> Result<String> {
    let out = Command::new("apt-cache")
        .args(["show", "--no-all-versions", name])
        .output()
        .context("running apt-cache (ember-image builds on Debian)")?;
    if !out.status.success() || out.stdout.is_empty() {
        bail!(
            "apt-cache show {name} found no package ({}); run `apt-get update`",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn field<'a>(record: &'a str, key: &str) -> Option<&'a str> {
    record.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == key).then(|| v.trim())
    })
}

/// The package that the meta-package `meta` (such as `linux-image-amd64`) depends on
/// first: the kernel package of the day.
pub fn dependency_of(meta: &str) -> Result<String> {
    let record = show(meta)?;
    let depends = field(&record, "Depends").with_context(|| format!("{meta} has no Depends"))?;
    let first = depends.split([',', '|']).next().unwrap_or_default();
    let name = first.split_whitespace().next().unwrap_or_default();
    if name.is_empty() {
        bail!("{meta}: cannot read its Depends: {depends:?}");
    }
    Ok(name.to_owned())
}

/// The candidate version of package `name`, downloaded into `cache` unless it is there.
pub fn fetch(name: &str, cache: &Path) -> Result<Package> {
    let record = show(name)?;
    let version = field(&record, "Version")
        .with_context(|| format!("{name} has no Version"))?
        .to_owned();
    std::fs::create_dir_all(cache).with_context(|| format!("creating {}", cache.display()))?;
    // apt-get download names files NAME_VERSION_ARCH.deb, with the epoch's ':' as %3a.
    let arch = field(&record, "Architecture").unwrap_or("amd64");
    let file = format!("{name}_{}_{arch}.deb", version.replace(':', "%3a"));
    let deb = cache.join(file);
    if !deb.exists() {
        // As root, apt drops to the `_apt` user, which cannot write into a cache under
        // root's checkout: download as root instead of warning about it.
        let status = Command::new("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(format!("{name}={version}"))
            .current_dir(cache)
            .status()
            .context("running apt-get download")?;
        if !status.success() || !deb.exists() {
            bail!("apt-get download {name}={version} failed ({status})");
        }
    }
    Ok(Package {
        name: name.to_owned(),
        version,
        deb,
    })
}
