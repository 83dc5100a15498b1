//! `ember bench e2e`: invocations measured the way a client sees them: a SigV4-signed
//! HTTPS request to control, routed over mutual TLS to a worker, run in a micro-VM and
//! back. The platform runs in this process ([`crate::local`]) on a temporary data
//! directory; the raw KVM floor of this machine is measured in the same run, so results
//! can be read as ratios on noisy machines.
//!
//! - `e2e_warm_invoke_us`: the echo reactor on its idle warm environment, one client;
//! - `e2e_cold_invoke_us`: the first invocation of a newly created function: the worker
//!   fetches and decrypts its code, creates an environment and runs the init phase;
//! - `e2e_invokes_per_sec`: echo with `--clients` concurrent clients, each on its own
//!   connection.
//!
//! `ember bench soak` runs the same in-process platform under a long mixed load ([`soak`]).

mod soak;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::Client;
use super::config::{self, Settings};
use super::error::CliError;
use super::invoke::invoke;
use super::up::deploy;
use super::{credentials, logging};
use crate::local::{self, LocalOptions, Platform};

#[derive(Debug, Subcommand)]
pub enum BenchCommand {
    /// Invocations end to end through control over HTTPS
    E2e(E2eArgs),
    /// A long mixed load with faults, timeouts and worker restarts; memory, descriptors
    /// and threads sampled over time must stay flat
    Soak(soak::SoakArgs),
}

#[derive(Debug, Args)]
pub struct E2eArgs {
    /// Print one JSON object (otherwise a summary)
    #[arg(long)]
    json: bool,
    /// Sequential warm invocations measured
    #[arg(long, default_value_t = 500)]
    warm: usize,
    /// Cold invocations measured (one new function each)
    #[arg(long, default_value_t = 30)]
    cold: usize,
    /// Concurrent clients of the throughput run
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Length of the throughput run, in seconds
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Samples of the KVM floor
    #[arg(long, default_value_t = 50)]
    floor: usize,
}

/// The event every invocation sends.
const EVENT: &[u8] = br#"{"bench":true}"#;
const ECHO: &str = "bench-echo";

pub fn run(command: BenchCommand) -> Result<(), CliError> {
    logging::init("error");
    match command {
        BenchCommand::E2e(args) => run_e2e(&args),
        BenchCommand::Soak(args) => run_soak(&args),
    }
}

fn run_soak(args: &soak::SoakArgs) -> Result<(), CliError> {
    let mut running = Running::start()?;
    let result = soak::soak(args, &mut running);
    running.shutdown();
    let report = result?;
    println!("{report}");
    if report["flat"] != json!(true) || report["unexpected"] != json!(0) {
        return Err(CliError::Protocol(format!(
            "the soak did not stay flat or saw unexpected answers: {report}"
        )));
    }
    Ok(())
}

fn run_e2e(args: &E2eArgs) -> Result<(), CliError> {
    let floor = floor(args.floor)?;
    let running = Running::start()?;
    let result = measure(args, &|| running.settings());
    running.shutdown();
    let mut report = result?;
    report["kvm_floor_us"] = floor;
    report["e2e_warm_over_floor"] = ratio(&report["e2e_warm_invoke_us"], &report["kvm_floor_us"]);
    report["e2e_cold_over_floor"] = ratio(&report["e2e_cold_invoke_us"], &report["kvm_floor_us"]);
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    }
    Ok(())
}

/// The platform in this process, on a temporary data directory removed at shutdown.
struct Running {
    runtime: tokio::runtime::Runtime,
    platform: Platform,
    data_dir: PathBuf,
}

impl Running {
    fn start() -> Result<Running, CliError> {
        let data_dir = std::env::temp_dir().join(format!("ember-bench-{}", std::process::id()));
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let runtime = tokio::runtime::Runtime::new()
            .map_err(|e| CliError::Config(format!("starting the async runtime: {e}")))?;
        let platform = runtime
            .block_on(local::start(LocalOptions {
                data_dir: data_dir.clone(),
                listen: any,
                fleet_listen: any,
                worker_listen: any,
                metrics_listen: None,
                worker_metrics_listen: None,
            }))
            .map_err(|e| CliError::Config(e.to_string()));
        match platform {
            Ok(platform) => Ok(Running {
                runtime,
                platform,
                data_dir,
            }),
            Err(e) => {
                let _ = std::fs::remove_dir_all(&data_dir);
                Err(e)
            }
        }
    }

    fn settings(&self) -> Result<Settings, CliError> {
        Ok(Settings {
            endpoint: config::parse_endpoint(&self.platform.endpoint)?,
            region: config::DEFAULT_REGION.to_owned(),
            ca: Some(self.data_dir.join("ca.pem")),
            credentials: credentials::load(&self.data_dir.join("credentials"), "ember")?,
        })
    }

    fn client(&self) -> Result<Client, CliError> {
        Client::new(self.settings()?)
    }

    /// Stops the worker and starts it again, back once it has joined.
    fn restart_worker(&mut self) -> Result<(), CliError> {
        self.runtime
            .block_on(self.platform.restart_worker())
            .map_err(|e| CliError::Config(e.to_string()))
    }

    fn shutdown(self) {
        self.runtime.block_on(self.platform.shutdown());
        let _ = std::fs::remove_dir_all(&self.data_dir);
    }
}

fn measure(
    args: &E2eArgs,
    settings: &dyn Fn() -> Result<Settings, CliError>,
) -> Result<Value, CliError> {
    let client = Client::new(settings()?)?;
    deploy(&client, ECHO, ember_examples::ECHO_REACTOR)?;
    call(&client, ECHO)?; // the first is cold

    let mut warm = Vec::with_capacity(args.warm);
    for _ in 0..args.warm {
        let start = Instant::now();
        call(&client, ECHO)?;
        warm.push(micros(start.elapsed()));
    }

    let names: Vec<String> = (0..args.cold).map(|i| format!("bench-cold-{i}")).collect();
    for name in &names {
        deploy(&client, name, ember_examples::ECHO_REACTOR)?;
    }
    let mut cold = Vec::with_capacity(args.cold);
    for name in &names {
        let start = Instant::now();
        call(&client, name)?;
        cold.push(micros(start.elapsed()));
    }

    let (per_sec, errors) = throughput(args, settings)?;
    Ok(json!({
        "e2e_warm_invoke_us": summary(&mut warm),
        "e2e_cold_invoke_us": summary(&mut cold),
        "e2e_invokes_per_sec": per_sec,
        "e2e_throughput_errors": errors,
        "clients": args.clients,
    }))
}

/// One synchronous invocation that must succeed.
fn call(client: &Client, function: &str) -> Result<(), CliError> {
    let invoked = invoke(
        client,
        function,
        None,
        "RequestResponse",
        false,
        EVENT.to_vec(),
    )?;
    if invoked.function_error.is_some() || invoked.payload != EVENT {
        return Err(CliError::Protocol(format!(
            "{function} answered {:?} ({:?})",
            String::from_utf8_lossy(&invoked.payload),
            invoked.function_error
        )));
    }
    Ok(())
}

/// Invocations per second with `args.clients` clients, after a one-second warm-up that
/// gives every client its warm environment; and the number of failed invocations.
fn throughput(
    args: &E2eArgs,
    settings: &dyn Fn() -> Result<Settings, CliError>,
) -> Result<(f64, u64), CliError> {
    let clients = (0..args.clients)
        .map(|_| Client::new(settings()?))
        .collect::<Result<Vec<_>, _>>()?;
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let threads: Vec<_> = clients
        .into_iter()
        .map(|client| {
            let (counting, stop) = (counting.clone(), stop.clone());
            let (done, failed) = (done.clone(), failed.clone());
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let ok = call(&client, ECHO).is_ok();
                    if counting.load(Ordering::Relaxed) {
                        let counter = if ok { &done } else { &failed };
                        counter.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs(1));
    counting.store(true, Ordering::Relaxed);
    let start = Instant::now();
    std::thread::sleep(Duration::from_secs(args.seconds.max(1)));
    let done = done.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    counting.store(false, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);
    for thread in threads {
        let _ = thread.join();
    }
    let per_sec = done as f64 / elapsed.as_secs_f64();
    Ok((
        (per_sec * 10.0).round() / 10.0,
        failed.load(Ordering::Relaxed),
    ))
}

/// The raw KVM floor: create a VM, take one exit, destroy it.
fn floor(samples: usize) -> Result<Value, CliError> {
    let measure =
        || ember_vmm::floor::kvm_floor().map_err(|e| CliError::Config(format!("KVM floor: {e}")));
    measure()?; // warms KVM's caches
    let mut floor = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        floor.push(micros(measure()?));
    }
    Ok(summary(&mut floor))
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn summary(samples: &mut [f64]) -> Value {
    samples.sort_by(f64::total_cmp);
    let percentile = |p: f64| {
        let index = ((samples.len() as f64 - 1.0) * p).round() as usize;
        samples
            .get(index)
            .map_or(Value::Null, |v| json!((v * 10.0).round() / 10.0))
    };
    json!({ "p50": percentile(0.5), "p99": percentile(0.99), "n": samples.len() })
}

fn ratio(a: &Value, b: &Value) -> Value {
    match (a["p50"].as_f64(), b["p50"].as_f64()) {
        (Some(a), Some(b)) if b > 0.0 => json!((a / b * 100.0).round() / 100.0),
        _ => Value::Null,
    }
}
