//! The function benchmarks: cold and warm invocations, isolation resets, RSS per
//! environment and per spare VM, throughput and the cost of wasm against native code.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_vmm::function::{
    Environment, FunctionSpec, Invocation, Isolation, LogSink, Pool, PoolConfig, SpecBuilder,
};
use ember_vmm::vm::{Snapshot, SpareVm};
use ember_vmm::VmConfig;
use serde_json::{json, Value};

use crate::measure::{micros, rss_kib, summary};
use crate::{Args, Error, TIMEOUT};

/// A function spec for the benchmarks (64 MiB, like the issue's targets).
pub fn spec(
    module: &[u8],
    version: &str,
    isolation: Isolation,
) -> Result<Arc<FunctionSpec>, Error> {
    Ok(SpecBuilder {
        name: "bench".into(),
        version: version.into(),
        memory_mib: FUNCTION_MIB,
        isolation,
        ..SpecBuilder::default()
    }
    .build(module)?)
}

pub const FUNCTION_MIB: u32 = 64;

pub fn checked(inv: &Invocation) -> Result<(), Error> {
    match &inv.error {
        Some(e) => Err(format!("invocation failed: {e}").into()),
        None => Ok(()),
    }
}

/// cold/warm invocations, isolation reset, RSS per environment, throughput, wasm cost.
pub fn function_benchmarks(args: &Args) -> Result<Value, Error> {
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
) -> Result<f64, Error> {
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
fn rss_per_spare(template: &Arc<Snapshot>, warm_heap: u64, count: usize) -> Result<f64, Error> {
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
fn throughput(pool: &Pool, spec: &Arc<FunctionSpec>, payload: &[u8]) -> Result<f64, Error> {
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
fn cpu_heavy_ratio(pool: &Pool) -> Result<f64, Error> {
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
) -> Result<usize, Error> {
    let mut envs = Vec::with_capacity(count);
    for _ in 0..count {
        envs.push(Environment::start(spec.clone(), prepared.clone(), false)?);
    }
    Ok(envs.len())
}
