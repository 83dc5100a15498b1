//! Execution environments: micro-VMs running one function version each, and the pool that
//! hands them out. See `docs/functions.md`.

mod environment;
mod log_buffer;
mod pool;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ember_wire::function::{ModuleKind, PAYLOAD_MAX};
use ember_wire::layout::{MAX_MEMORY, MIN_MEMORY};
use sha2::{Digest, Sha256};

pub use environment::Environment;
pub use log_buffer::{LogBuffer, LOG_MAX};
pub use pool::{Pool, PoolConfig, PoolStats};

/// Receives every chunk of a function's log (its standard error) as it arrives.
pub type LogSink = Arc<dyn Fn(&FunctionSpec, &[u8]) + Send + Sync>;

/// Whether an environment keeps its state between invocations.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Isolation {
    /// Like Lambda: memory and globals persist across invocations of one environment.
    #[default]
    Reuse,
    /// Every invocation starts from the state right after the init phase.
    PerInvocation,
}

/// A function version as the pool runs it. Environments are never shared between two
/// specs with different keys.
#[derive(Debug)]
pub struct FunctionSpec {
    pub account: String,
    pub name: String,
    pub version: String,
    pub module: Arc<[u8]>,
    pub kind: ModuleKind,
    pub handler: String,
    pub memory_mib: u32,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
    pub isolation: Isolation,
    key: EnvKey,
}

/// What an environment is bound to: account, function, version and a digest of everything
/// else that shapes it (code, handler, memory, timeout, environment, isolation).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EnvKey {
    pub account: String,
    pub function: String,
    pub version: String,
    pub digest: [u8; 32],
}

/// Lambda's ceiling on the function timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(900);

/// How to build a [`FunctionSpec`]; `Default` gives Lambda's defaults (3 s, 128 MiB).
#[derive(Clone, Debug)]
pub struct SpecBuilder {
    pub account: String,
    pub name: String,
    pub version: String,
    pub handler: String,
    pub memory_mib: u32,
    pub timeout: Duration,
    pub env: Vec<(String, String)>,
    pub isolation: Isolation,
}

impl Default for SpecBuilder {
    fn default() -> Self {
        SpecBuilder {
            account: "local".into(),
            name: "function".into(),
            version: "$LATEST".into(),
            handler: "handle".into(),
            memory_mib: 128,
            timeout: Duration::from_secs(3),
            env: Vec::new(),
            isolation: Isolation::Reuse,
        }
    }
}

impl SpecBuilder {
    /// Checks the settings and the module (before any VM is started).
    pub fn build(self, module: &[u8]) -> Result<Arc<FunctionSpec>, Failure> {
        let mem = u64::from(self.memory_mib) << 20;
        if !(MIN_MEMORY..=MAX_MEMORY).contains(&mem) || !self.memory_mib.is_multiple_of(2) {
            return Err(Failure::InvalidConfig(format!(
                "memory must be an even number of MiB between {} and {}, got {}",
                MIN_MEMORY >> 20,
                MAX_MEMORY >> 20,
                self.memory_mib
            )));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(Failure::InvalidConfig(format!(
                "timeout must be more than 0 and at most {} seconds, got {:?}",
                MAX_TIMEOUT.as_secs(),
                self.timeout
            )));
        }
        let kind =
            ember_wire::module::inspect(module, &self.handler).map_err(Failure::InvalidModule)?;
        let mut env = self.env;
        env.sort();
        let mut hash = Sha256::new();
        hash.update(Sha256::digest(module));
        for part in [
            self.handler.as_bytes(),
            &self.memory_mib.to_le_bytes(),
            &self.timeout.as_nanos().to_le_bytes(),
        ] {
            hash.update((part.len() as u64).to_le_bytes());
            hash.update(part);
        }
        for (k, v) in &env {
            for part in [k, v] {
                hash.update((part.len() as u64).to_le_bytes());
                hash.update(part.as_bytes());
            }
        }
        hash.update([self.isolation as u8]);
        let key = EnvKey {
            account: self.account.clone(),
            function: self.name.clone(),
            version: self.version.clone(),
            digest: hash.finalize().into(),
        };
        Ok(Arc::new(FunctionSpec {
            account: self.account,
            name: self.name,
            version: self.version,
            module: module.into(),
            kind,
            handler: self.handler,
            memory_mib: self.memory_mib,
            timeout: self.timeout,
            env,
            isolation: self.isolation,
            key,
        }))
    }
}

impl FunctionSpec {
    pub fn key(&self) -> &EnvKey {
        &self.key
    }
}

/// Why an invocation did not produce a normal response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Failure {
    InvalidConfig(String),
    InvalidModule(String),
    PayloadTooLarge(usize),
    /// The init phase failed.
    Init(String),
    /// Non-zero exit or trap.
    Function(String),
    OutOfMemory(String),
    /// The host stopped the invocation at the function's timeout.
    Timeout(Duration),
    /// The environment died (guest fault, broken protocol) or could not be created.
    Crashed(String),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::InvalidConfig(m) => write!(f, "invalid configuration: {m}"),
            Failure::InvalidModule(m) => write!(f, "invalid module: {m}"),
            Failure::PayloadTooLarge(n) => {
                write!(
                    f,
                    "payload of {n} bytes exceeds the {PAYLOAD_MAX}-byte limit"
                )
            }
            Failure::Init(m) => write!(f, "init error: {m}"),
            Failure::Function(m) => write!(f, "function error: {m}"),
            Failure::OutOfMemory(m) => write!(f, "{m}"),
            Failure::Timeout(t) => write!(f, "Task timed out after {:.2} seconds", t.as_secs_f64()),
            Failure::Crashed(m) => write!(f, "environment failed: {m}"),
        }
    }
}

impl std::error::Error for Failure {}

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
