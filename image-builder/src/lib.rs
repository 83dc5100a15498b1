//! `ember-image`: builds the worker OS image (docs/worker-image.md). Each step is its own
//! module: fetching packages (`apt`, `deb`), the kernel (`kernel`, `modules`), the static
//! emberd (`emberd`), the initramfs (`config`, `initramfs`), the UEFI image (`uki`,
//! `disk`) and the `manifest`.

pub mod apt;
pub mod config;
pub mod deb;
pub mod disk;
pub mod emberd;
pub mod initramfs;
pub mod kernel;
pub mod manifest;
pub mod modules;
pub mod uki;

use anyhow::{Context, Result};
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// Where systemd-boot-efi keeps the EFI stub.
const STUB_PATH: &str = "usr/lib/systemd/boot/efi/linuxx64.efi.stub";

/// Everything a build takes.
pub struct Options {
    pub out: PathBuf,
    /// Downloads and unpacked packages (`target/ember-image-cache` by default).
    pub cache: PathBuf,
    pub kernel: kernel::Source,
    /// A prebuilt static emberd instead of building it.
    pub emberd: Option<PathBuf>,
    pub modules: Vec<String>,
    pub settings: config::Settings,
    pub ca: Option<PathBuf>,
    pub selftest: bool,
}

/// The workspace this crate belongs to (where emberd is built).
pub fn workspace_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("image-builder sits in the workspace")
        .to_path_buf()
}

/// Builds the image into `options.out` and returns its manifest.
pub fn build(options: &Options) -> Result<manifest::Manifest> {
    let started = Instant::now();
    let step = |what: &str| eprintln!("ember-image: {what} ({:.1?})", started.elapsed());
    fs::create_dir_all(&options.out)
        .with_context(|| format!("creating {}", options.out.display()))?;

    let kernel = kernel::Kernel::load(&options.kernel, &options.cache)?;
    step(&format!("kernel {} ({})", kernel.release, kernel.version));
    let modules = modules::resolve(&kernel.modules_dir, &options.modules)?;
    step(&format!("{} modules", modules.len()));

    let emberd = match &options.emberd {
        Some(path) => path.clone(),
        None => emberd::build(&workspace_dir())?,
    };
    let emberd_bytes =
        fs::read(&emberd).with_context(|| format!("reading {}", emberd.display()))?;
    emberd::ensure_static(&emberd, &emberd_bytes)?;
    let emberd_version = emberd::version(&emberd)?;
    step(&format!("emberd {emberd_version}"));

    let mut files = vec![initramfs::File {
        path: "init".into(),
        mode: 0o755,
        bytes: emberd_bytes,
    }];
    if let Some(ca) = &options.ca {
        files.push(initramfs::File {
            path: config::CA_PATH.into(),
            mode: 0o644,
            bytes: fs::read(ca).with_context(|| format!("reading {}", ca.display()))?,
        });
    }
    files.push(initramfs::File {
        path: config::CONF_PATH.into(),
        mode: 0o600,
        bytes: options.settings.file()?.into_bytes(),
    });
    let lib = format!("lib/modules/{}", kernel.release);
    files.push(initramfs::File {
        path: format!("{lib}/modules.dep"),
        mode: 0o644,
        bytes: modules::modules_dep(&modules).into_bytes(),
    });
    files.push(initramfs::File {
        path: format!("{lib}/modules.order"),
        mode: 0o644,
        bytes: modules::modules_order(&modules).into_bytes(),
    });
    for module in modules {
        files.push(initramfs::File {
            path: format!("{lib}/{}", module.path),
            mode: 0o644,
            bytes: module.bytes,
        });
    }
    let initramfs = initramfs::pack(&files)?;
    step("initramfs");

    let vmlinuz = fs::read(&kernel.vmlinuz)
        .with_context(|| format!("reading {}", kernel.vmlinuz.display()))?;
    let cmdline = config::cmdline(options.selftest);

    let stub_package = apt::fetch("systemd-boot-efi", &options.cache)?;
    let stub_dir = options
        .cache
        .join(format!("systemd-boot-efi_{}", stub_package.version));
    if !stub_dir.join(STUB_PATH).exists() {
        deb::extract(&stub_package.deb, &[STUB_PATH], &stub_dir)?;
    }
    let stub = fs::read(stub_dir.join(STUB_PATH)).context("reading the EFI stub")?;
    let osrel = uki::os_release(&emberd_version, &kernel.release);
    let uki = uki::assemble(
        &stub,
        &[
            (".osrel", osrel.as_bytes()),
            (".cmdline", cmdline.as_bytes()),
            (".initrd", &initramfs),
            (".linux", &vmlinuz),
        ],
    )?;
    let disk_path = options.out.join("worker.img");
    disk::write(&disk_path, &uki)?;
    step("worker.img");

    let write = |name: &str, bytes: &[u8]| {
        let path = options.out.join(name);
        fs::write(&path, bytes).with_context(|| format!("writing {}", path.display()))
    };
    write("vmlinuz", &vmlinuz)?;
    write("initramfs.img", &initramfs)?;
    write("cmdline", format!("{cmdline}\n").as_bytes())?;
    let disk = fs::read(&disk_path)?;
    let manifest = manifest::Manifest {
        files: vec![
            manifest::Entry::new("vmlinuz", &vmlinuz, &kernel.version),
            manifest::Entry::new("initramfs.img", &initramfs, &emberd_version),
            manifest::Entry::new(
                "cmdline",
                format!("{cmdline}\n").as_bytes(),
                &emberd_version,
            ),
            manifest::Entry::new("worker.img", &disk, &emberd_version),
        ],
        kernel_release: kernel.release,
        kernel_version: kernel.version,
        stub_version: stub_package.version,
        emberd_version,
        git_commit: git_commit(),
    };
    write(
        "manifest.json",
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    step(&format!("done: {}", options.out.display()));
    Ok(manifest)
}

fn git_commit() -> Option<String> {
    let out = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(workspace_dir())
        .output()
        .ok()?;
    let commit = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (out.status.success() && !commit.is_empty()).then_some(commit)
}
