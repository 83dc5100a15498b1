//! A function version as the pool runs it: its settings, checked once, and the key that
//! decides which environments it may use.

use std::sync::Arc;
use std::time::Duration;

use ember_wire::function::ModuleKind;
use ember_wire::layout::{MAX_MEMORY, MIN_MEMORY};
use sha2::{Digest, Sha256};

use super::Failure;

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

/// Settings no function can have.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error(
        "memory must be an even number of MiB between {min} and {max}, got {0}",
        min = MIN_MEMORY >> 20,
        max = MAX_MEMORY >> 20
    )]
    Memory(u32),
    #[error(
        "timeout must be more than 0 and at most {max} seconds, got {0:?}",
        max = MAX_TIMEOUT.as_secs()
    )]
    Timeout(Duration),
}

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
            return Err(Failure::InvalidConfig(SpecError::Memory(self.memory_mib)));
        }
        if self.timeout.is_zero() || self.timeout > MAX_TIMEOUT {
            return Err(Failure::InvalidConfig(SpecError::Timeout(self.timeout)));
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

    /// The spec as it crosses to a VM process (the module goes apart, when it is needed).
    pub fn state(&self) -> SpecState {
        SpecState {
            account: self.account.clone(),
            name: self.name.clone(),
            version: self.version.clone(),
            command: self.kind == ModuleKind::Command,
            handler: self.handler.clone(),
            memory_mib: self.memory_mib,
            timeout: self.timeout,
            env: self.env.clone(),
            per_invocation: self.isolation == Isolation::PerInvocation,
            digest: self.key.digest,
        }
    }

    /// The spec the worker checked and sent (`state`), with `module` (empty where the VM
    /// process does not load it).
    pub fn from_state(state: SpecState, module: Arc<[u8]>) -> Arc<FunctionSpec> {
        Arc::new(FunctionSpec {
            key: EnvKey {
                account: state.account.clone(),
                function: state.name.clone(),
                version: state.version.clone(),
                digest: state.digest,
            },
            account: state.account,
            name: state.name,
            version: state.version,
            module,
            kind: if state.command {
                ModuleKind::Command
            } else {
                ModuleKind::Reactor
            },
            handler: state.handler,
            memory_mib: state.memory_mib,
            timeout: state.timeout,
            env: state.env,
            isolation: if state.per_invocation {
                Isolation::PerInvocation
            } else {
                Isolation::Reuse
            },
        })
    }
}

/// A [`FunctionSpec`] without its module, as the worker sends it to a VM process.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct SpecState {
    account: String,
    name: String,
    version: String,
    command: bool,
    handler: String,
    memory_mib: u32,
    timeout: Duration,
    env: Vec<(String, String)>,
    per_invocation: bool,
    digest: [u8; 32],
}
