//! The static `emberd` that becomes `/init`: an ordinary cargo build of the workspace's
//! emberd for `x86_64-unknown-linux-musl` (so cargo's own caching makes a repeat build
//! instant). ring's C code needs `musl-gcc`, from Debian's `musl-tools`, installed here
//! when it is missing.

use anyhow::{bail, Context, Result};
use object::read::elf::{ElfFile64, ProgramHeader};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const TARGET: &str = "x86_64-unknown-linux-musl";

/// Builds emberd and returns the path of the static binary.
pub fn build(workspace: &Path) -> Result<PathBuf> {
    ensure_musl_gcc()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(&cargo)
        .args([
            "build",
            "--release",
            "--locked",
            "-p",
            "emberd",
            "--bin",
            "emberd",
        ])
        .args(["--target", TARGET])
        // The release profile keeps line tables for backtraces; in the image they would
        // more than double /init and with it the initramfs every boot loads.
        .args(["--config", "profile.release.strip=\"symbols\""])
        .current_dir(workspace)
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("building the static emberd failed ({status})");
    }
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace.join("target"));
    Ok(target_dir.join(TARGET).join("release/emberd"))
}

fn ensure_musl_gcc() -> Result<()> {
    let found = Command::new("musl-gcc").arg("--version").output().is_ok();
    if found {
        return Ok(());
    }
    eprintln!(
        "ember-image: installing musl-tools (musl-gcc, for ring's C code in the static emberd)"
    );
    let status = Command::new("apt-get")
        .args(["install", "-y", "-q", "musl-tools"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .context("running apt-get install musl-tools")?;
    if !status.success() {
        bail!("apt-get install musl-tools failed ({status}); install it and build again");
    }
    Ok(())
}

/// Refuses a dynamically linked binary: the image has no libc or loader for it.
pub fn ensure_static(binary: &Path, bytes: &[u8]) -> Result<()> {
    let elf = ElfFile64::<object::Endianness>::parse(bytes)
        .with_context(|| format!("{} is not an x86-64 ELF executable", binary.display()))?;
    let endian = elf.endian();
    if let Some(ph) = elf
        .elf_program_headers()
        .iter()
        .find(|ph| ph.p_type(endian) == object::elf::PT_INTERP)
    {
        let interp = ph.data(endian, bytes).unwrap_or_default();
        bail!(
            "{} is dynamically linked (interpreter {}); the image has no libc: build it for {TARGET}",
            binary.display(),
            String::from_utf8_lossy(interp).trim_end_matches('\0')
        );
    }
    Ok(())
}

/// emberd's version, as `emberd --version` prints it (`emberd 0.1.0`).
pub fn version(binary: &Path) -> Result<String> {
    let out = Command::new(binary)
        .arg("--version")
        .output()
        .with_context(|| format!("running {} --version", binary.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().nth(1).unwrap_or_default();
    if !out.status.success() || version.is_empty() {
        bail!("{} --version printed no version", binary.display());
    }
    Ok(version.to_owned())
}
