//! The function runtime: one WebAssembly module per environment, run by wasmi.
//!
//! A *reactor* (`_initialize` + a handler export) is instantiated once, at load, so its
//! memory and globals persist across invocations like a warm Lambda. A *command* (`_start`)
//! is instantiated fresh for every invocation.

pub mod wasi;

use alloc::format;
use alloc::string::{String, ToString};
use alloc::vec::Vec;

use ember_wire::function::{InvokeRequest, LoadRequest, ModuleKind, Outcome, Status, PAYLOAD_MAX};
use rand_chacha::ChaCha20Rng;
use rand_core::{Rng, SeedableRng};
use wasmi::{CompilationMode, Config, Engine, Error, Instance, Linker, Module, Store};

use crate::clock::Clock;
use wasi::Wasi;

/// Linear memory may use at most this share of the guest heap: growing a memory can need
/// the old and the new buffer at once.
const MEMORY_SHARE_DIVISOR: usize = 2;

struct Function {
    module: Module,
    linker: Linker<Wasi>,
    kind: ModuleKind,
    handler: String,
    env: Vec<(String, String)>,
    memory_limit: usize,
    /// Seeds each store's random source, so commands never repeat a sequence.
    seeds: ChaCha20Rng,
    clock: Clock,
    /// The reactor's live instance; dropped after a failure (its state is then unknown).
    reactor: Option<(Store<Wasi>, Instance)>,
    memory_used: u64,
}

pub struct Runtime {
    engine: Engine,
    tsc_khz: u64,
    heap_size: usize,
    function: Option<Function>,
}

/// What a load or an invocation produced: the reply, and the log to stream before it.
pub struct Run {
    pub outcome: Outcome,
    pub log: Vec<u8>,
}

impl Runtime {
    pub fn new(tsc_khz: u64, heap_size: usize) -> Runtime {
        let mut config = Config::default();
        // Validate and translate everything at load: the init phase pays once, and a reset
        // to the post-init state never throws translated code away.
        config.compilation_mode(CompilationMode::Eager);
        Runtime {
            engine: Engine::new(&config),
            tsc_khz,
            heap_size,
            function: None,
        }
    }

    pub fn load(&mut self, req: LoadRequest) -> Run {
        let start = Clock::new(self.tsc_khz);
        if self.function.is_some() {
            return failed(
                Status::InvalidModule,
                "this environment already has a module".into(),
            );
        }
        let module = match Module::new(&self.engine, &req.module[..]) {
            Ok(m) => m,
            Err(e) => return failed(Status::InvalidModule, format!("invalid module: {e}")),
        };
        let exports = |name: &str| {
            module
                .exports()
                .any(|e| e.name() == name && e.ty().func().is_some())
        };
        let kind = if exports("_start") {
            ModuleKind::Command
        } else if exports(&req.handler) {
            ModuleKind::Reactor
        } else {
            return failed(
                Status::InvalidModule,
                format!(
                    "module exports neither `_start` (command) nor `{}` (reactor)",
                    req.handler
                ),
            );
        };
        let mut linker = Linker::new(&self.engine);
        if let Err(e) = wasi::link(&mut linker, &module) {
            return failed(Status::InvalidModule, e);
        }
        let mut clock = Clock::new(self.tsc_khz);
        clock.sync(req.now_unix_ns);
        let mut function = Function {
            module,
            linker,
            kind,
            handler: req.handler,
            env: req.env,
            memory_limit: (req.memory_limit as usize).min(self.heap_size / MEMORY_SHARE_DIVISOR),
            seeds: ChaCha20Rng::from_seed(req.seed),
            clock,
            reactor: None,
            memory_used: 0,
        };
        let (status, error, log_tail, log) = match kind {
            ModuleKind::Command => (Status::Success, String::new(), Vec::new(), Vec::new()),
            ModuleKind::Reactor => {
                let mut store = function.new_store(Vec::new());
                let result = function.initialize(&mut store);
                let (status, error) =
                    classify(result.as_ref().err(), store.data(), Status::InitError);
                if let Ok(instance) = result {
                    function.note_memory(&store, &instance);
                    if status == Status::Success {
                        function.reactor = Some((store, instance));
                        let wasi = function
                            .reactor
                            .as_mut()
                            .map(|(s, _)| s.data_mut())
                            .unwrap();
                        (
                            status,
                            error,
                            wasi.log_tail(),
                            core::mem::take(&mut wasi.log),
                        )
                    } else {
                        (
                            status,
                            error,
                            store.data().log_tail(),
                            store.into_data().log,
                        )
                    }
                } else {
                    (
                        status,
                        error,
                        store.data().log_tail(),
                        store.into_data().log,
                    )
                }
            }
        };
        let memory_used = function.memory_used;
        if status == Status::Success {
            self.function = Some(function);
        }
        Run {
            outcome: Outcome {
                status,
                module_kind: kind as u8,
                duration_ns: start.elapsed_ns(),
                memory_used,
                error,
                output: Vec::new(),
                log_tail,
            },
            log,
        }
    }

    pub fn invoke(&mut self, req: InvokeRequest) -> Run {
        let start = Clock::new(self.tsc_khz);
        let Some(f) = self.function.as_mut() else {
            return failed(Status::FunctionError, "no module is loaded".into());
        };
        f.clock.sync(req.now_unix_ns);
        f.seeds = ChaCha20Rng::from_seed(req.seed);
        let mut env = f.env.clone();
        env.extend(req.env);
        let (mut store, instance, result) = match f.kind {
            ModuleKind::Reactor => {
                let Some((mut store, instance)) = f.reactor.take() else {
                    return failed(
                        Status::FunctionError,
                        "the function failed earlier; this environment is unusable".into(),
                    );
                };
                store.data_mut().begin(req.payload);
                store.data_mut().env = env;
                store.data_mut().clock = f.clock;
                store.data_mut().reseed(&mut f.seeds);
                let result = instance
                    .get_typed_func::<(), ()>(&store, &f.handler)
                    .and_then(|handler| handler.call(&mut store, ()));
                (store, Some(instance), result)
            }
            ModuleKind::Command => {
                let mut store = f.new_store(env);
                store.data_mut().begin(req.payload);
                match f.linker.instantiate_and_start(&mut store, &f.module) {
                    Ok(instance) => {
                        let result = instance
                            .get_typed_func::<(), ()>(&store, "_start")
                            .and_then(|start| start.call(&mut store, ()));
                        (store, Some(instance), result)
                    }
                    Err(e) => (store, None, Err(e)),
                }
            }
        };
        let (mut status, mut error) =
            classify(result.as_ref().err(), store.data(), Status::FunctionError);
        if store.data().stdout.len() > PAYLOAD_MAX && status == Status::Success {
            status = Status::FunctionError;
            error = format!(
                "response of {} bytes exceeds the {PAYLOAD_MAX}-byte limit",
                store.data().stdout.len()
            );
            store.data_mut().stdout = Vec::new();
        }
        if let Some(instance) = &instance {
            f.note_memory(&store, instance);
        }
        let wasi = store.data_mut();
        let output = core::mem::take(&mut wasi.stdout);
        let log = core::mem::take(&mut wasi.log);
        let log_tail = wasi.log_tail();
        f.clock = wasi.clock;
        if f.kind == ModuleKind::Reactor && status == Status::Success {
            f.reactor = instance.map(|i| (store, i));
        }
        Run {
            outcome: Outcome {
                status,
                module_kind: 0,
                duration_ns: start.elapsed_ns(),
                memory_used: f.memory_used,
                error,
                output,
                log_tail,
            },
            log,
        }
    }
}

impl Function {
    fn new_store(&mut self, env: Vec<(String, String)>) -> Store<Wasi> {
        let mut seed = [0u8; 32];
        self.seeds.fill_bytes(&mut seed);
        let mut store = Store::new(
            self.module.engine(),
            Wasi::new(env, seed, self.clock, self.memory_limit),
        );
        store.limiter(|wasi| &mut wasi.limits);
        store
    }

    /// Instantiates the reactor and runs its init phase (`_initialize`, if exported).
    fn initialize(&mut self, store: &mut Store<Wasi>) -> Result<Instance, Error> {
        store.data_mut().env = self.env.clone();
        let instance = self
            .linker
            .instantiate_and_start(&mut *store, &self.module)?;
        if let Ok(init) = instance.get_typed_func::<(), ()>(&*store, "_initialize") {
            init.call(&mut *store, ())?;
        }
        Ok(instance)
    }

    fn note_memory(&mut self, store: &Store<Wasi>, instance: &Instance) {
        if let Some(mem) = instance.get_memory(store, "memory") {
            self.memory_used = self.memory_used.max(mem.data_size(store) as u64);
        }
    }
}

/// Turns a wasmi result into a status: exit code 0 is success, a refused memory grow
/// followed by a trap is out-of-memory, anything else is `failure`.
fn classify(err: Option<&Error>, wasi: &Wasi, failure: Status) -> (Status, String) {
    let Some(err) = err else {
        return (Status::Success, String::new());
    };
    match err.i32_exit_status() {
        Some(0) => (Status::Success, String::new()),
        Some(code) => (failure, format!("exited with code {code}")),
        None if wasi.limits.denied => (Status::OutOfMemory, format!("out of memory: {err}")),
        None => (failure, err.to_string()),
    }
}

fn failed(status: Status, error: String) -> Run {
    Run {
        outcome: Outcome {
            status,
            module_kind: 0,
            duration_ns: 0,
            memory_used: 0,
            error,
            output: Vec::new(),
            log_tail: Vec::new(),
        },
        log: Vec::new(),
    }
}
