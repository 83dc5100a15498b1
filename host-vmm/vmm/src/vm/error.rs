//! Why a VM could not be built, paused or given a command: one variant per cause, each
//! carrying the error it came from.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use vm_memory::GuestMemoryError;

use super::command::CommandError;
use super::config::ConfigError;
use super::cpu::TablesError;
use super::exit::VmExit;
use super::loader::ImageError;
use super::registers::RegisterError;
use crate::kvm::KvmError;
use crate::memory::MemoryError;

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("invalid VM configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("KVM: {0}")]
    Kvm(#[from] KvmError),
    #[error("KVM: {0}")]
    Registers(#[from] RegisterError),
    #[error("VM setup failed: {0}")]
    Memory(#[from] MemoryError),
    #[error("VM setup failed: guest image: {0}")]
    Image(#[from] ImageError),
    #[error("VM setup failed: {0}")]
    SystemTables(#[from] TablesError),
    #[error("VM setup failed: random seed: {0}")]
    Seed(#[source] getrandom::Error),
    #[error("VM setup failed: writing boot info: {0}")]
    BootInfo(#[source] GuestMemoryError),
    #[error("VM setup failed: hybrid vsock socket {path:?}: {source}")]
    Uds { path: PathBuf, source: io::Error },
    #[error("VM setup failed: spawning vCPU thread: {0}")]
    VcpuThread(#[source] io::Error),
    #[error("VM ended before it could pause: {0}")]
    EndedBeforePause(VmExit),
    #[error("guest did not become idle within {0:?}")]
    NotIdle(Duration),
    #[error("{0}")]
    Command(#[from] CommandError),
    /// A snapshot from another process that does not hold together.
    #[error("a snapshot from another process: {0}")]
    Import(String),
}
