//! Execution environments: micro-VMs running one function version each, and the pool that
//! hands them out. See `docs/functions.md`.

mod environment;
mod failure;
mod log_buffer;
mod pool;
mod spec;

use std::sync::Arc;
use std::time::Duration;

pub use environment::Environment;
pub use failure::{EnvError, Failure, FailureState};
pub use log_buffer::{LogBuffer, LOG_MAX};
pub use pool::{Pool, PoolConfig, PoolStats};
pub use spec::{EnvKey, FunctionSpec, Isolation, SpecBuilder, SpecError, SpecState, MAX_TIMEOUT};

/// Receives every chunk of a function's log (its standard error) as it arrives.
pub type LogSink = Arc<dyn Fn(&FunctionSpec, &[u8]) + Send + Sync>;

/// The result of one invocation.
#[derive(Clone, Debug)]
pub struct Invocation {
    /// The response (standard output).
    pub output: Vec<u8>,
    pub error: Option<Failure>,
    /// The last 4 KiB of the function's log.
    pub log_tail: Vec<u8>,
    /// The whole log of the invocation, and of the init phase it ran on a cold start, up
    /// to [`LOG_MAX`] bytes (beyond that the start and the end, see [`LogBuffer`]).
    pub log: Vec<u8>,
    /// A new environment was created for this invocation.
    pub cold: bool,
    /// That new environment started in a spare VM (see [`PoolConfig::spare_vms`]).
    pub spare: bool,
    /// How long creating the environment and its init phase took (cold starts only).
    pub init_duration: Option<Duration>,
    /// Host-measured time of the invocation itself.
    pub duration: Duration,
    /// Peak linear memory of the module, in bytes.
    pub memory_used: u64,
    /// Which environment ran it (unique within the process).
    pub environment: u64,
}
