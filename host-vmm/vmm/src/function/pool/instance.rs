//! What the pool holds: environments and spare VMs, each in this process or, with a
//! [`Jail`], in a sandboxed VM process of its own. The pool treats both alike.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;

use ember_wire::function::Outcome;

use crate::function::{Environment, Failure, FunctionSpec, LogBuffer, LogSink};
use crate::process::{Jail, RemoteEnvironment, RemoteSpare};
use crate::vm::SpareVm;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One execution environment of the pool.
pub(super) struct Instance {
    /// Unique in this process.
    pub id: u64,
    /// Started in a spare VM.
    pub spare: bool,
    pub created: Instant,
    pub last_used: Instant,
    body: Body,
}

enum Body {
    Local(Environment),
    Jailed(RemoteEnvironment, Arc<Jail>),
}

impl Instance {
    pub fn local(environment: Environment) -> Instance {
        Instance::new(environment.spare, Body::Local(environment))
    }

    pub fn jailed(environment: RemoteEnvironment, jail: Arc<Jail>) -> Instance {
        Instance::new(environment.spare, Body::Jailed(environment, jail))
    }

    fn new(spare: bool, body: Body) -> Instance {
        Instance {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            spare,
            created: Instant::now(),
            last_used: Instant::now(),
            body,
        }
    }

    pub fn spec(&self) -> &Arc<FunctionSpec> {
        match &self.body {
            Body::Local(environment) => environment.spec(),
            Body::Jailed(environment, _) => environment.spec(),
        }
    }

    /// Runs one invocation; `Err` means the environment is gone.
    pub fn invoke_logged(
        &mut self,
        payload: &[u8],
        extra_env: &[(String, String)],
        log: &LogSink,
        buffer: &mut LogBuffer,
    ) -> Result<Outcome, Failure> {
        let outcome = match &mut self.body {
            Body::Local(environment) => environment.invoke_logged(payload, extra_env, log, buffer),
            Body::Jailed(environment, jail) => {
                environment.invoke_logged(jail, payload, extra_env, log, buffer)
            }
        };
        self.last_used = Instant::now();
        outcome
    }

    /// Returns the environment to the state right after init.
    pub fn reset(&mut self) -> Result<(), Failure> {
        match &mut self.body {
            Body::Local(environment) => environment.reset(),
            Body::Jailed(environment, jail) => environment.reset(jail),
        }
    }
}

/// A warmed spare VM waiting for an environment.
pub(super) enum Spare {
    Local(SpareVm),
    Jailed(RemoteSpare),
}
