//! The worker image, built by `ember-image` (its downloads and the static emberd are cached
//! in the target directory, so a repeat build only repacks).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Mutex, PoisonError};

use ember_testkit::binaries::binary;

use crate::qemu::Boot;

/// A built image's files.
#[derive(Debug)]
pub struct Image {
    pub dir: PathBuf,
}

impl Image {
    /// Builds the image into `dir` with `ember-image build`'s extra `flags`. Builds run one
    /// at a time: ember-image's download cache is not safe for concurrent cold builds.
    pub fn build(dir: &Path, flags: &[&str]) -> Image {
        static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
        let _building = ONE_AT_A_TIME.lock().unwrap_or_else(PoisonError::into_inner);
        let out = Command::new(binary("ember-image", "ember-image"))
            .args(["build", "--out"])
            .arg(dir)
            .args(flags)
            .output()
            .expect("run ember-image");
        assert!(
            out.status.success(),
            "ember-image build failed:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Image {
            dir: dir.to_owned(),
        }
    }

    /// Booting the kernel and initramfs directly with the image's command line.
    pub fn direct(&self) -> Boot {
        let cmdline = std::fs::read_to_string(self.dir.join("cmdline"))
            .expect("the image's cmdline")
            .trim()
            .to_owned();
        Boot::Direct {
            kernel: self.dir.join("vmlinuz"),
            initrd: self.dir.join("initramfs.img"),
            cmdline,
        }
    }

    /// Booting the GPT disk image through UEFI firmware.
    pub fn uefi(&self) -> Boot {
        Boot::Uefi {
            disk: self.dir.join("worker.img"),
        }
    }
}
