//! Micro-VMs in processes of their own (see `docs/isolation.md`): the conversation between
//! the worker and a VM process over its channel.
//!
//! The worker ([`Jail`], in the worker's process) has a VM process, forked sandboxed by the
//! `ember-vm` zygote, do one job: boot a guest-init template and hand back its snapshot,
//! run a version's init phase and hand back its snapshot, warm a spare VM and wait, or
//! become an execution environment and serve its invocations and resets ([`serve`], in
//! the VM process). Snapshots cross as memfds, never mapped by the worker; payloads,
//! responses and logs cross as bytes after each message's header.
//!
//! Everything a VM process says is untrusted: a guest may have taken it over. Its
//! snapshots are checked on import, its outcomes decoded as the guest's are, its replies
//! waited for only until the invocation's deadline and a margin, after which the process
//! is killed.

mod remote;
mod serve;

use serde::{Deserialize, Serialize};

use crate::function::{FailureState, SpecState};
use crate::vm::SnapshotState;

pub use remote::{Jail, RemoteEnvironment, RemoteSpare};
pub use serve::{serve, serve_with_probes};

use ember_jail::seccomp::{CHANNEL, VM};
use ember_jail::{zygote, JailConfig};

/// The zygote's arguments: one definition for every program that can be a zygote
/// (`ember-vm zygote`, and the hidden `zygote` command of `emberd`, `ember` and
/// `ember-bench`, which start themselves as their zygote).
#[derive(Clone, Debug, clap::Args)]
pub struct ZygoteArgs {
    /// The JSON [`JailConfig`] the worker passed.
    #[arg(long)]
    pub config: String,
    /// Lets VM processes attempt [`Probe`]s (isolation tests only).
    #[arg(long)]
    pub test_probes: bool,
}

impl ZygoteArgs {
    /// The zygote's whole life: opens `/dev/kvm`, then forks VM processes for the worker
    /// until it goes.
    pub fn run(&self) -> ! {
        let config: JailConfig = serde_json::from_str(&self.config).unwrap_or_else(|e| {
            eprintln!("zygote: invalid --config: {e}");
            std::process::exit(2)
        });
        // Opened here, once: VM processes cannot open anything.
        let kvm = crate::open_kvm().unwrap_or_else(|e| {
            eprintln!("zygote: {e}");
            std::process::exit(2)
        });
        let work = if self.test_probes {
            serve_with_probes
        } else {
            serve
        };
        zygote::serve(&config, &[CHANNEL, VM], &[kvm], work)
    }
}

/// What the worker asks of a VM process.
#[derive(Debug, Serialize, Deserialize)]
pub enum Request {
    Ping,
    /// Test-only (`--test-probes`): attempt a forbidden operation.
    Probe(Probe),
    /// Boot guest-init with `mem_mib` of memory and answer its snapshot (a template).
    Template {
        mem_mib: u32,
        test_frames: bool,
    },
    /// Run `spec`'s init phase (the module follows the header) in a VM from `template`
    /// (memfds attached) and answer the snapshot taken after it.
    Prepare {
        spec: SpecState,
        template: Box<SnapshotState>,
    },
    /// Warm a spare VM from `template` (memfds attached) and keep it for a `Start`.
    Spare {
        template: Box<SnapshotState>,
        warm_heap: u64,
    },
    /// Become an environment of `spec` from `snapshot` (memfds attached): in the spare VM
    /// when it was warmed from the snapshot's template, else in a new VM.
    Start {
        spec: SpecState,
        snapshot: Box<SnapshotState>,
    },
    /// Run one invocation (the payload follows the header) with `env` added.
    Invoke {
        env: Vec<(String, String)>,
    },
    /// Return the environment to the state right after init.
    Reset,
}

/// A VM process's answers.
#[derive(Debug, Serialize, Deserialize)]
pub enum Reply {
    Pong,
    /// The probe's system call returned (rather than the process being killed): how.
    Probed(String),
    /// The request is not served by this process.
    Refused(String),
    /// A snapshot (memfds attached).
    Snapshot(Box<SnapshotState>),
    /// The spare VM is warm, or the reset done.
    Done,
    /// The environment runs; `spare`: in the warmed spare VM.
    Started {
        spare: bool,
    },
    /// A chunk of the function's log (after the header), before the final answer.
    Log,
    /// The invocation's outcome, encoded as the guest's (after the header).
    Outcome,
    Failed(FailureState),
}

/// Forbidden operations the isolation tests make a VM process attempt.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub enum Probe {
    OpenFile(String),
    TcpSocket,
    Exec(String),
    Ptrace(u32),
}
