//! `ember-bench`: micro-VM benchmarks, reported next to the raw KVM floor measured in the
//! same run so results can be compared as ratios across machines.
//!
//! `cargo run --release -p ember-bench -- --json` prints one JSON object.

use std::time::{Duration, Instant};

use clap::Parser;
use std::sync::Arc;

use ember_vmm::function::{
    Environment, FunctionSpec, Invocation, Isolation, LogSink, Pool, PoolConfig, SpecBuilder,
};
use ember_vmm::vm::{Snapshot, SpareVm};
use ember_vmm::{floor, GuestClient, Vm, VmConfig};
use serde_json::{json, Value};

#[derive(Parser)]
#[command(name = "ember-bench", about = "ember micro-VM benchmarks")]
struct Args {
    /// Print one JSON object on stdout and nothing else.
    #[arg(long)]
    json: bool,
    /// Samples of each boot measurement (floor and boot-to-ready are interleaved).
    #[arg(long, default_value_t = 200)]
    boots: usize,
    /// Echo round trips to sample.
    #[arg(long, default_value_t = 5000)]
    echoes: usize,
    /// Idle VMs kept alive for the RSS measurement.
    #[arg(long, default_value_t = 100)]
    idle_vms: usize,
    /// Samples of the function measurements (cold, warm, reset).
    #[arg(long, default_value_t = 200)]
    invokes: usize,
    /// Idle environments to hold at once (0 skips the check).
    #[arg(long, default_value_t = 1000)]
    max_envs: usize,
    /// Spare VMs held at once for the RSS measurement.
    #[arg(long, default_value_t = 20)]
    spares: usize,
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse();
    if let Err(e) = run(&args) {
        eprintln!("ember-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Box<dyn std::error::Error>> {
    let config = VmConfig::default();
    // Warm up: open /dev/kvm, fault in the guest image, start the allocator.
    floor::kvm_floor()?;
    boot_to_ready(&config)?;

    let mut floor_us = Vec::with_capacity(args.boots);
    let mut boot_us = Vec::with_capacity(args.boots);
    for _ in 0..args.boots {
        floor_us.push(micros(floor::kvm_floor()?));
        boot_us.push(micros(boot_to_ready(&config)?));
    }

    let vm = Vm::boot(&config)?;
    let mut client = GuestClient::connect(&vm, TIMEOUT)?;
    let payload = [0x5au8; 64];
    let mut echo_us = Vec::with_capacity(args.echoes);
    for _ in 0..args.echoes {
        let start = Instant::now();
        let reply = client.echo(&payload)?;
        echo_us.push(micros(start.elapsed()));
        assert_eq!(reply, payload, "echo returned different bytes");
    }
    drop(client);
    drop(vm);

    let rss_per_vm_kib = rss_per_idle_vm(&config, args.idle_vms)?;

    let functions = function_benchmarks(args)?;

    let floor = summary(&mut floor_us);
    let boot = summary(&mut boot_us);
    let mut report = json!({
        "kvm_floor_us": floor,
        "boot_to_ready_us": boot,
        "boot_to_ready_over_floor": ratio(&boot, &floor),
        "vsock_echo_rtt_us": summary(&mut echo_us),
        "rss_per_vm_kib": rss_per_vm_kib,
        "guest_mem_mib": config.mem_mib,
        "samples": {
            "boots": args.boots,
            "echoes": args.echoes,
            "idle_vms": args.idle_vms,
            "invokes": args.invokes,
        },
    });
    report
        .as_object_mut()
        .expect("an object")
        .extend(functions.as_object().expect("an object").clone());
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}

/// A function spec for the benchmarks (64 MiB, like the issue's targets).
fn spec(
    module: &[u8],
    version: &str,
    isolation: Isolation,
) -> Result<Arc<FunctionSpec>, Box<dyn std::error::Error>> {
    Ok(SpecBuilder {
        name: "bench".into(),
        version: version.into(),
        memory_mib: FUNCTION_MIB,
        isolation,
        ..SpecBuilder::default()
    }
    .build(module)?)
}

const FUNCTION_MIB: u32 = 64;

fn checked(inv: &Invocation) -> Result<(), Box<dyn std::error::Error>> {
    match &inv.error {
        Some(e) => Err(format!("invocation failed: {e}").into()),
        None => Ok(()),
    }
}

/// cold/warm invocations, isolation reset, RSS per environment, throughput, wasm cost.
fn function_benchmarks(args: &Args) -> Result<Value, Box<dyn std::error::Error>> {
    let log: LogSink = Arc::new(|_: &FunctionSpec, _: &[u8]| {});
    let template = Snapshot::of_fresh_guest(&VmConfig {
        mem_mib: FUNCTION_MIB,
        ..VmConfig::default()
    })?;
    let payload = br#"{"hello":"world"}"#;
    let echo = spec(ember_examples::ECHO_REACTOR, "1", Isolation::Reuse)?;

    // First cold start of a version: load and init in a VM from the template, snapshot
    // that, start an environment from it, invoke.
    let mut first_cold_us = Vec::with_capacity(args.invokes / 4);
    for _ in 0..args.invokes.div_ceil(4) {
        let start = Instant::now();
        let prepared = Environment::prepare(&echo, &template, &log)?;
        let mut env = Environment::start(echo.clone(), prepared, false)?;
        let out = env.invoke(payload, &[], &log)?;
        first_cold_us.push(micros(start.elapsed()));
        assert_eq!(out.output, payload, "echo returned different bytes");
    }

    // Cold: a new environment from the version's post-init snapshot, one invocation; in a
    // spare VM warmed beforehand (the pool's steady state), and in a new VM (no spares).
    let prepared = Environment::prepare(&echo, &template, &log)?;
    let warm_heap = PoolConfig::default().spare_warm_heap;
    let mut cold_us = Vec::with_capacity(args.invokes);
    let mut unpooled_us = Vec::with_capacity(args.invokes);
    let mut spare_warm_us = Vec::with_capacity(args.invokes);
    for _ in 0..args.invokes {
        let start = Instant::now();
        let spare = SpareVm::new(&template, warm_heap)?;
        spare_warm_us.push(micros(start.elapsed()));

        let start = Instant::now();
        let mut env = Environment::from_spare(echo.clone(), prepared.clone(), spare)?;
        let out = env.invoke(payload, &[], &log)?;
        cold_us.push(micros(start.elapsed()));
        assert_eq!(out.output, payload, "echo returned different bytes");
        drop(env);

        let start = Instant::now();
        let mut env = Environment::start(echo.clone(), prepared.clone(), false)?;
        let out = env.invoke(payload, &[], &log)?;
        unpooled_us.push(micros(start.elapsed()));
        assert_eq!(out.output, payload, "echo returned different bytes");
    }

    // Warm: the same idle environment, through the pool (once its spares are warmed, as
    // in steady state).
    let config = PoolConfig::default();
    let pool = Pool::new(config.clone(), log.clone());
    checked(&pool.invoke(&echo, payload))?;
    let deadline = Instant::now() + TIMEOUT;
    while pool.spares(FUNCTION_MIB) < config.spare_vms && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut warm_us = Vec::with_capacity(args.invokes * 5);
    for _ in 0..args.invokes * 5 {
        let start = Instant::now();
        let inv = pool.invoke(&echo, payload);
        warm_us.push(micros(start.elapsed()));
        checked(&inv)?;
    }

    // Reset: an isolated environment back to its post-init state after an invocation.
    let isolated = spec(
        ember_examples::COUNTER,
        "isolated",
        Isolation::PerInvocation,
    )?;
    let counter = Environment::prepare(&isolated, &template, &log)?;
    let mut env = Environment::start(isolated, counter, false)?;
    let mut reset_us = Vec::with_capacity(args.invokes);
    for _ in 0..args.invokes {
        let out = env.invoke(b"{}", &[], &log)?;
        assert_eq!(
            out.output, br#"{"count":1}"#,
            "isolation must reset the counter"
        );
        let start = Instant::now();
        env.reset()?;
        reset_us.push(micros(start.elapsed()));
    }
    drop(env);

    let env_rss_kib = rss_per_idle_env(&echo, &prepared, &log, args.idle_vms, None)?;
    let spare_env_rss_kib =
        rss_per_idle_env(&echo, &prepared, &log, args.idle_vms, Some(&template))?;
    let spare_rss_kib = rss_per_spare(&template, warm_heap, args.spares)?;
    let per_sec = throughput(&pool, &echo, payload)?;
    let cpu_heavy_ratio = cpu_heavy_ratio(&pool)?;
    let max_envs = hold_envs(&echo, &prepared, args.max_envs)?;
    Ok(json!({
        "first_cold_invoke_us": summary(&mut first_cold_us),
        "cold_invoke_us": summary(&mut cold_us),
        "cold_invoke_unpooled_us": summary(&mut unpooled_us),
        "spare_warm_us": summary(&mut spare_warm_us),
        "spare_rss_kib": spare_rss_kib,
        "spare_env_rss_kib": spare_env_rss_kib,
        "warm_invoke_us": summary(&mut warm_us),
        "reset_us": summary(&mut reset_us),
        "env_rss_kib": env_rss_kib,
        "function_mem_mib": FUNCTION_MIB,
        "warm_invokes_per_sec": per_sec,
        "cpu_heavy_ratio": cpu_heavy_ratio,
        "idle_envs_held": max_envs,
    }))
}

/// Host RSS growth per idle environment that has run one invocation, started in a new VM
/// or, with `spares_of`, in a spare VM of that template.
fn rss_per_idle_env(
    spec: &Arc<FunctionSpec>,
    prepared: &Arc<Snapshot>,
    log: &LogSink,
    count: usize,
    spares_of: Option<&Arc<Snapshot>>,
) -> Result<f64, Box<dyn std::error::Error>> {
    let warm_heap = PoolConfig::default().spare_warm_heap;
    let before = rss_kib()?;
    let spares = match spares_of {
        Some(template) => (0..count)
            .map(|_| SpareVm::new(template, warm_heap).map(Some))
            .collect::<Result<Vec<_>, _>>()?,
        None => (0..count).map(|_| None).collect(),
    };
    let mut envs = Vec::with_capacity(count);
    for spare in spares {
        let mut env = match spare {
            Some(spare) => Environment::from_spare(spec.clone(), prepared.clone(), spare)?,
            None => Environment::start(spec.clone(), prepared.clone(), false)?,
        };
        env.invoke(b"{}", &[], log)?;
        envs.push(env);
    }
    // An environment started in a spare gives back its unused warmed pages once it has
    // been idle for 10 ms after its first invocation.
    std::thread::sleep(Duration::from_millis(100));
    let after = rss_kib()?;
    drop(envs);
    Ok(after.saturating_sub(before) as f64 / count as f64)
}

/// Host RSS growth per spare VM waiting to be used.
fn rss_per_spare(
    template: &Arc<Snapshot>,
    warm_heap: u64,
    count: usize,
) -> Result<f64, Box<dyn std::error::Error>> {
    let before = rss_kib()?;
    let spares = (0..count)
        .map(|_| SpareVm::new(template, warm_heap))
        .collect::<Result<Vec<_>, _>>()?;
    let after = rss_kib()?;
    drop(spares);
    Ok(after.saturating_sub(before) as f64 / count as f64)
}

/// Echo invocations per second with every core busy (two clients per core, one warm
/// environment each).
fn throughput(
    pool: &Pool,
    spec: &Arc<FunctionSpec>,
    payload: &[u8],
) -> Result<f64, Box<dyn std::error::Error>> {
    let clients = 2 * std::thread::available_parallelism().map_or(2, |n| n.get());
    let window = Duration::from_secs(2);
    let start = Instant::now();
    let total: usize = std::thread::scope(|s| {
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut n = 0;
                    while start.elapsed() < window {
                        if pool.invoke(spec, payload).error.is_none() {
                            n += 1;
                        }
                    }
                    n
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    Ok((total as f64 / start.elapsed().as_secs_f64()).round())
}

/// SHA-256 over 4 MiB in the guest's wasm engine divided by the same code run natively.
fn cpu_heavy_ratio(pool: &Pool) -> Result<f64, Box<dyn std::error::Error>> {
    const MIB: usize = 4;
    // A generous timeout: on a loaded machine the hash alone can take several seconds.
    let spec = SpecBuilder {
        name: "bench".into(),
        version: "cpu".into(),
        memory_mib: FUNCTION_MIB,
        timeout: Duration::from_secs(60),
        ..SpecBuilder::default()
    }
    .build(ember_examples::SHA_HEAVY)?;
    let event = format!(r#"{{"mib":{MIB}}}"#);
    checked(&pool.invoke(&spec, event.as_bytes()))?;
    let inv = pool.invoke(&spec, event.as_bytes());
    checked(&inv)?;
    let start = Instant::now();
    let native = ember_examples::digest_pattern(MIB);
    let native_time = start.elapsed();
    let reply = String::from_utf8_lossy(&inv.output);
    if !reply.contains(&native) {
        return Err(format!("guest and native digests differ: {reply} vs {native}").into());
    }
    Ok((inv.duration.as_secs_f64() / native_time.as_secs_f64() * 10.0).round() / 10.0)
}

/// Creates `count` idle environments and keeps them all alive at once; returns how many.
fn hold_envs(
    spec: &Arc<FunctionSpec>,
    prepared: &Arc<Snapshot>,
    count: usize,
) -> Result<usize, Box<dyn std::error::Error>> {
    let mut envs = Vec::with_capacity(count);
    for _ in 0..count {
        envs.push(Environment::start(spec.clone(), prepared.clone(), false)?);
    }
    Ok(envs.len())
}

/// From nothing to the guest answering its first ping; includes tearing the VM down
/// afterwards only in the wall time of the loop, not in the sample.
fn boot_to_ready(config: &VmConfig) -> Result<Duration, Box<dyn std::error::Error>> {
    let start = Instant::now();
    let vm = Vm::boot(config)?;
    let mut client = GuestClient::connect(&vm, TIMEOUT)?;
    client.ping()?;
    let elapsed = start.elapsed();
    drop(client);
    drop(vm);
    Ok(elapsed)
}

/// Host RSS growth per idle, booted (and pinged) VM.
fn rss_per_idle_vm(config: &VmConfig, count: usize) -> Result<f64, Box<dyn std::error::Error>> {
    let before = rss_kib()?;
    let mut vms = Vec::with_capacity(count);
    for _ in 0..count {
        let vm = Vm::boot(config)?;
        GuestClient::connect(&vm, TIMEOUT)?.ping()?;
        vms.push(vm);
    }
    let after = rss_kib()?;
    drop(vms);
    Ok((after.saturating_sub(before)) as f64 / count as f64)
}

fn rss_kib() -> std::io::Result<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm")?;
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| std::io::Error::other("unreadable /proc/self/statm"))?;
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    Ok(pages * page / 1024)
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    (sorted[index] * 10.0).round() / 10.0
}

fn summary(samples: &mut [f64]) -> Value {
    samples.sort_by(f64::total_cmp);
    json!({ "p50": percentile(samples, 0.5), "p99": percentile(samples, 0.99) })
}

fn ratio(a: &Value, b: &Value) -> Value {
    let (Some(a), Some(b)) = (a["p50"].as_f64(), b["p50"].as_f64()) else {
        return Value::Null;
    };
    json!((a / b * 100.0).round() / 100.0)
}
