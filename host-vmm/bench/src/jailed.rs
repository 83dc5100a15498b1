//! The same function measurements with every VM in a sandboxed process of its own
//! (`docs/isolation.md`), beside the in-process ones: warm and cold invocations, resets,
//! memory per idle environment, and how many idle environments one worker holds. Needs
//! root (the sandbox does); skipped, and said so in the JSON, without it.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_jail::{JailConfig, Zygote};
use ember_vmm::function::{FunctionSpec, Isolation, LogBuffer, LogSink, Pool, PoolConfig};
use ember_vmm::process::Jail;
use ember_vmm::VmConfig;
use serde_json::{json, Value};

use crate::functions::{checked, spec, FUNCTION_MIB};
use crate::measure::{micros, rss_kib, summary};
use crate::{Args, Error, TIMEOUT};

pub fn jailed_benchmarks(args: &Args) -> Result<Value, Error> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Ok(json!({ "jailed": "skipped: the sandbox needs root" }));
    }
    let root = std::env::temp_dir().join(format!("ember-bench-jail-{}", std::process::id()));
    std::fs::create_dir_all(&root)?;
    let result = measure(args, &root);
    let _ = std::fs::remove_dir(&root);
    result
}

fn measure(args: &Args, root: &Path) -> Result<Value, Error> {
    let config = JailConfig::detect(root, 65534, 65534)?;
    let program = std::env::current_exe()?;
    let jail = Arc::new(Jail::new(Zygote::start(&program, &config, &[])?));
    let log: LogSink = Arc::new(|_: &FunctionSpec, _: &[u8]| {});
    let payload = br#"{"hello":"world"}"#;
    let echo = spec(ember_examples::ECHO_REACTOR, "1", Isolation::Reuse)?;
    let template = jail.template(&VmConfig {
        mem_mib: FUNCTION_MIB,
        ..VmConfig::default()
    })?;
    let prepared = jail.prepare(&echo, &template, &log, &mut LogBuffer::default())?;
    let warm_heap = PoolConfig::default().spare_warm_heap;

    // Cold: a spare process (forked, sandboxed, VM warmed beforehand, as the pool keeps
    // them) becomes the environment and runs one invocation; and without a spare.
    let mut cold_us = Vec::with_capacity(args.invokes);
    let mut unpooled_us = Vec::with_capacity(args.invokes);
    let mut spare_us = Vec::with_capacity(args.invokes);
    for _ in 0..args.invokes {
        let start = Instant::now();
        let spare = jail.spare(&template, warm_heap)?;
        spare_us.push(micros(start.elapsed()));

        let start = Instant::now();
        let mut env = jail.start(&echo, &prepared, Some(spare))?;
        let out = env.invoke_logged(&jail, payload, &[], &log, &mut LogBuffer::default())?;
        cold_us.push(micros(start.elapsed()));
        assert_eq!(out.output, payload, "echo returned different bytes");
        drop(env);

        let start = Instant::now();
        let mut env = jail.start(&echo, &prepared, None)?;
        env.invoke_logged(&jail, payload, &[], &log, &mut LogBuffer::default())?;
        unpooled_us.push(micros(start.elapsed()));
    }

    // Warm: through a jailed pool, as emberd runs it.
    let pool = Pool::new(
        PoolConfig {
            jail: Some(jail.clone()),
            ..PoolConfig::default()
        },
        log.clone(),
    );
    checked(&pool.invoke(&echo, payload))?;
    let deadline = Instant::now() + TIMEOUT;
    while pool.spares(FUNCTION_MIB) < PoolConfig::default().spare_vms && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut warm_us = Vec::with_capacity(args.invokes * 5);
    for _ in 0..args.invokes * 5 {
        let start = Instant::now();
        let inv = pool.invoke(&echo, payload);
        warm_us.push(micros(start.elapsed()));
        checked(&inv)?;
    }
    drop(pool);

    // Reset of an isolated environment, across the boundary.
    let isolated = spec(
        ember_examples::COUNTER,
        "isolated",
        Isolation::PerInvocation,
    )?;
    let counter = jail.prepare(&isolated, &template, &log, &mut LogBuffer::default())?;
    let mut env = jail.start(&isolated, &counter, None)?;
    let mut reset_us = Vec::with_capacity(args.invokes);
    for _ in 0..args.invokes {
        let out = env.invoke_logged(&jail, b"{}", &[], &log, &mut LogBuffer::default())?;
        assert_eq!(out.output, br#"{"count":1}"#, "isolation must reset");
        let start = Instant::now();
        env.reset(&jail)?;
        reset_us.push(micros(start.elapsed()));
    }
    drop(env);

    // Memory per idle environment: the worker's own growth and the VM processes' RSS
    // (each process counts the program's shared pages in full) and PSS (shared pages
    // split between the processes sharing them: the host memory they take); then as many
    // idle environments as asked, held at once.
    let count = args.idle_vms;
    let (rss_before, pss_before) = vm_processes_kib("VmRSS:", "Pss:");
    let worker_before = rss_kib()?;
    let mut envs = Vec::with_capacity(count);
    for _ in 0..count {
        let spare = jail.spare(&template, warm_heap)?;
        let mut env = jail.start(&echo, &prepared, Some(spare))?;
        env.invoke_logged(&jail, b"{}", &[], &log, &mut LogBuffer::default())?;
        envs.push(env);
    }
    std::thread::sleep(Duration::from_millis(100));
    let worker = rss_kib()?.saturating_sub(worker_before);
    let (rss_after, pss_after) = vm_processes_kib("VmRSS:", "Pss:");
    let per_env =
        |before: u64, after: u64| (after.saturating_sub(before) + worker) as f64 / count as f64;
    let env_rss_kib = per_env(rss_before, rss_after);
    let env_pss_kib = per_env(pss_before, pss_after);
    while envs.len() < args.max_envs {
        envs.push(jail.start(&echo, &prepared, None)?);
    }
    let held = envs.len();
    drop(envs);

    Ok(json!({
        "jailed_cold_invoke_us": summary(&mut cold_us),
        "jailed_cold_invoke_unpooled_us": summary(&mut unpooled_us),
        "jailed_spare_warm_us": summary(&mut spare_us),
        "jailed_warm_invoke_us": summary(&mut warm_us),
        "jailed_reset_us": summary(&mut reset_us),
        "jailed_spare_env_rss_kib": env_rss_kib,
        "jailed_spare_env_pss_kib": env_pss_kib,
        "jailed_idle_envs_held": held,
    }))
}

/// The sums, over every `ember-vm` process, of its `rss` line in `/proc/PID/status` and
/// its `pss` line in `/proc/PID/smaps_rollup` (KiB).
fn vm_processes_kib(rss: &str, pss: &str) -> (u64, u64) {
    let field = |text: &str, name: &str| -> u64 {
        text.lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|value| value.trim().trim_end_matches(" kB").parse().ok())
            .unwrap_or(0)
    };
    ember_jail::sandbox::running()
        .into_iter()
        .filter_map(|pid| {
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok()?;
            Some((field(&status, rss), field(&rollup, pss)))
        })
        .fold((0, 0), |(r, p), (rss, pss)| (r + rss, p + pss))
}
