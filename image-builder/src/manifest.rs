//! `manifest.json`: what each output file is, so an operator can check a copy and tell
//! which kernel and emberd it holds.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Serialize, Deserialize, Debug)]
pub struct Manifest {
    pub kernel_release: String,
    pub kernel_version: String,
    pub stub_version: String,
    pub emberd_version: String,
    /// The workspace's `git rev-parse HEAD`, when built from a git checkout.
    pub git_commit: Option<String>,
    pub files: Vec<Entry>,
}

#[derive(Serialize, Deserialize, Debug)]
pub struct Entry {
    pub name: String,
    pub size: u64,
    pub sha256: String,
    /// The version of what the file holds (the kernel package's for `vmlinuz`).
    pub version: String,
}

impl Entry {
    pub fn new(name: &str, bytes: &[u8], version: &str) -> Entry {
        Entry {
            name: name.to_owned(),
            size: bytes.len() as u64,
            sha256: hex::encode(Sha256::digest(bytes)),
            version: version.to_owned(),
        }
    }
}
