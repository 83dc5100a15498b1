//! `emberd`: ember's worker daemon. `emberd serve` joins a control service's fleet and
//! runs its invocations (`docs/fleet.md`). By hand, `emberd vm run --mem 16 --echo hello`
//! boots guest-init, talks to it over vsock, prints the guest's log and the round trip,
//! and shuts it down. `emberd selftest` qualifies this machine (`ember-selftest: ok ...`).
//! Run as PID 1 (a worker image's `/init`), or as `emberd init`, it is the machine's init
//! ([`init`]).

mod init;
mod selftest;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use ember_vmm::function::{Isolation, Pool, PoolConfig, SpecBuilder};
use ember_vmm::{GuestClient, Vm, VmConfig};

#[derive(Parser)]
#[command(name = "emberd", version, about = "ember worker daemon")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a control service's fleet and run its invocations until the lease ends.
    Serve(emberd::config::ServeArgs),
    /// Init mode, what emberd does as PID 1: mount, load modules, then serve or self-test
    /// per the kernel command line and the config file (docs/emberd-init.md).
    Init,
    /// Boot a micro-VM, echo through it and run a wasm function cold and warm; print one
    /// `ember-selftest: ok ...` or `ember-selftest: FAILED ...` line.
    Selftest {
        /// The KVM device to check.
        #[arg(long, default_value = "/dev/kvm")]
        kvm: PathBuf,
    },
    /// Micro-VM tools.
    Vm {
        #[command(subcommand)]
        command: VmCommand,
    },
    /// The micro-VM zygote, started by `emberd serve` itself (docs/isolation.md).
    #[command(hide = true)]
    Zygote(ember_vmm::process::ZygoteArgs),
    /// Run a WebAssembly function locally: one cold and one warm invocation.
    Run {
        /// The module (a WASI command with `_start`, or a reactor exporting the handler).
        #[arg(long)]
        wasm: PathBuf,
        /// The reactor's handler export.
        #[arg(long, default_value = "handle")]
        handler: String,
        /// Memory in MiB (an even number).
        #[arg(long, default_value_t = 64)]
        mem: u32,
        /// Timeout in seconds.
        #[arg(long, default_value_t = 3.0)]
        timeout: f64,
        /// The event (the function's standard input).
        #[arg(long, default_value = "{}")]
        payload: String,
        /// Environment variables for the function, `KEY=VALUE`.
        #[arg(long = "env", value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Reset the environment to its post-init state after every invocation.
        #[arg(long)]
        isolate: bool,
        /// Invocations to run (the first one is cold).
        #[arg(long, default_value_t = 2)]
        count: u32,
    },
}

#[derive(Subcommand)]
enum VmCommand {
    /// Boot guest-init, ask for its info, echo a message, shut it down.
    Run {
        /// Guest memory in MiB.
        #[arg(long, default_value_t = 16)]
        mem: u32,
        /// Text to send through the guest and back.
        #[arg(long, default_value = "hello from the host")]
        echo: String,
        /// Also serve the hybrid vsock Unix socket here and keep the VM running until Ctrl-C.
        #[arg(long)]
        uds: Option<PathBuf>,
        /// Ask the guest to log its boot steps.
        #[arg(long)]
        verbose: bool,
    },
}

fn main() -> ExitCode {
    // The kernel starts init with no arguments worth parsing.
    if std::process::id() == 1 {
        return init::main();
    }
    block_termination_signals();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let Cli { command } = Cli::parse();
    let result = match command {
        Command::Init => return init::main(),
        Command::Zygote(zygote) => zygote.run(),
        Command::Selftest { kvm } => {
            let result = selftest::run(&kvm);
            println!("{}", selftest::line(&result));
            return if result.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
        }
        Command::Serve(args) => emberd::run(args).map_err(Into::into),
        Command::Vm {
            command:
                VmCommand::Run {
                    mem,
                    echo,
                    uds,
                    verbose,
                },
        } => run_vm(mem, &echo, uds, verbose),
        Command::Run {
            wasm,
            handler,
            mem,
            timeout,
            payload,
            env,
            isolate,
            count,
        } => {
            let env = env
                .iter()
                .map(|kv| {
                    kv.split_once('=')
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .ok_or_else(|| format!("--env {kv:?} is not KEY=VALUE").into())
                })
                .collect::<Result<Vec<_>, _>>();
            env.and_then(|env| {
                let builder = SpecBuilder {
                    name: wasm
                        .file_stem()
                        .map_or("function".into(), |s| s.to_string_lossy().into()),
                    handler,
                    memory_mib: mem,
                    timeout: Duration::from_secs_f64(timeout.max(0.0)),
                    env,
                    isolation: if isolate {
                        Isolation::PerInvocation
                    } else {
                        Isolation::Reuse
                    },
                    ..SpecBuilder::default()
                };
                run_function(&wasm, builder, payload.as_bytes(), count)
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("emberd: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Any error, to print and exit with.
type Error = Box<dyn std::error::Error>;

fn run_vm(mem: u32, echo: &str, uds: Option<PathBuf>, verbose: bool) -> Result<(), Error> {
    let config = VmConfig {
        mem_mib: mem,
        uds_path: uds.clone(),
        verbose,
        ..VmConfig::default()
    };
    let start = Instant::now();
    let vm = Vm::boot(&config)?;
    let mut client = GuestClient::connect(&vm, Duration::from_secs(5))?;
    client.ping()?;
    let ready = start.elapsed();
    let info = client.info()?;
    let t = Instant::now();
    let reply = client.echo(echo.as_bytes())?;
    let rtt = t.elapsed();
    println!("vm {}: booted to first pong in {ready:?}", vm.id());
    println!(
        "guest-init {} sees {} MiB ({} MiB heap), running in ring {}",
        info.version,
        info.mem_size >> 20,
        info.heap_size >> 20,
        info.cpl
    );
    println!(
        "echo: {:?} ({rtt:?} round trip)",
        String::from_utf8_lossy(&reply)
    );
    if let Some(path) = &uds {
        println!(
            "hybrid vsock socket at {} (CONNECT 52); Ctrl-C to stop",
            path.display()
        );
        while vm.exit().is_none() && !interrupted(Duration::from_millis(200)) {}
    } else {
        client.shutdown()?;
    }
    let exit = vm.wait(Duration::from_secs(5)).unwrap_or_else(|| vm.stop());
    let log = vm.guest_log();
    if !log.is_empty() {
        println!("guest log:");
        for line in log {
            println!("  | {line}");
        }
    }
    println!("vm exit: {exit}");
    Ok(())
}

fn run_function(
    wasm: &Path,
    builder: SpecBuilder,
    payload: &[u8],
    count: u32,
) -> Result<(), Error> {
    let module = std::fs::read(wasm).map_err(|e| format!("reading {}: {e}", wasm.display()))?;
    let spec = builder.build(&module)?;
    let log_sink = Arc::new(|spec: &ember_vmm::function::FunctionSpec, chunk: &[u8]| {
        for line in String::from_utf8_lossy(chunk).lines() {
            log::info!(target: "function", "[{}] {line}", spec.name);
        }
    });
    let pool = Pool::new(PoolConfig::default(), log_sink);
    let mut failed = false;
    for i in 1..=count {
        let inv = pool.invoke(&spec, payload);
        let start = match (inv.cold, inv.spare) {
            (true, true) => "cold, in a spare VM",
            (true, false) => "cold",
            (false, _) => "warm",
        };
        println!("invocation {i} ({start}, environment {}):", inv.environment);
        if let Some(init) = inv.init_duration {
            println!(
                "  start:    {init:?} (a new environment; a version's first also runs its init)"
            );
        }
        println!(
            "  duration: {:?}, memory used: {} KiB",
            inv.duration,
            inv.memory_used >> 10
        );
        println!("  response: {}", String::from_utf8_lossy(&inv.output));
        if let Some(error) = &inv.error {
            println!("  error:    {error}");
            failed = true;
        }
        if !inv.log_tail.is_empty() {
            println!("  log tail:");
            for line in String::from_utf8_lossy(&inv.log_tail).lines() {
                println!("    | {line}");
            }
        }
    }
    if failed {
        Err("the function failed".into())
    } else {
        Ok(())
    }
}

fn termination_signals() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset only write the local set.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

/// Blocks SIGINT/SIGTERM in every thread (threads inherit the mask), so Ctrl-C is taken with
/// `interrupted` and the VM is torn down cleanly (its socket file removed).
fn block_termination_signals() {
    let set = termination_signals();
    // SAFETY: changes only this thread's signal mask, before any thread is spawned.
    unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
}

/// Waits up to `timeout` for SIGINT or SIGTERM.
fn interrupted(timeout: Duration) -> bool {
    let set = termination_signals();
    let ts = libc::timespec {
        tv_sec: timeout.as_secs() as libc::time_t,
        tv_nsec: timeout.subsec_nanos() as libc::c_long,
    };
    // SAFETY: valid set and timeout; no siginfo requested.
    unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) > 0 }
}
