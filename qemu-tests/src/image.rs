//! The worker image, built by `ember-image` (its downloads and the static emberd are cached
//! in the target directory, so a repeat build only repacks).

use std::path::{Path, PathBuf};
use std::process::Command;

use ember_testkit::binaries::binary;

/// A built image's files.
#[derive(Debug)]
pub struct Image {
    pub dir: PathBuf,
}

impl Image {
    /// Builds the image into `dir` with `ember-image build`'s extra `flags`.
    pub fn build(dir: &Path, flags: &[&str]) -> Image {
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

    pub fn kernel(&self) -> PathBuf {
        self.dir.join("vmlinuz")
    }

    pub fn initrd(&self) -> PathBuf {
        self.dir.join("initramfs.img")
    }

    pub fn disk(&self) -> PathBuf {
        self.dir.join("worker.img")
    }

    /// The command line the image was built with.
    pub fn cmdline(&self) -> String {
        std::fs::read_to_string(self.dir.join("cmdline"))
            .expect("the image's cmdline")
            .trim()
            .to_owned()
    }
}
