//! `ember bench soak`: the platform under a long mixed load, watched for leaks.
//!
//! Control and a worker run in this process ([`crate::local`]), so its resident memory,
//! open descriptors and threads are the platform's. Clients loop over a mix of echo
//! invocations, traps, out-of-memory functions, failing init phases, timeouts and
//! asynchronous events, while the worker is restarted under load. Every sample is printed;
//! at the end the second half of the run is compared with the first: a platform that
//! leaks grows, one that does not stays flat: the last third of the run (after the
//! restarts' bursts of new environments) must stay within the middle third's peaks.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::Method;
use serde_json::{json, Value};

use crate::client::{segment, Call, Client};
use crate::error::CliError;
use crate::invoke::invoke;
use crate::{code, function};

#[derive(Debug, Args)]
pub struct SoakArgs {
    /// How long the load runs
    #[arg(long, default_value_t = 5.0)]
    minutes: f64,
    /// Concurrent clients
    #[arg(long, default_value_t = 4)]
    clients: usize,
    /// Seconds between samples
    #[arg(long, default_value_t = 10)]
    sample_seconds: u64,
    /// Worker restarts, evenly spread over the run
    #[arg(long, default_value_t = 1)]
    worker_restarts: u32,
    /// Print JSON lines (otherwise a table) and a JSON summary
    #[arg(long)]
    json: bool,
}

/// One kind of invocation in the mix, and what it must answer.
struct Kind {
    name: &'static str,
    module: &'static [u8],
    /// Lambda's `Timeout`, in seconds.
    timeout: u32,
    expect: Expect,
    /// How many of each round of the mix.
    weight: usize,
}

#[derive(Clone, Copy, PartialEq)]
enum Expect {
    /// A synchronous call that returns the event.
    Echo,
    /// A synchronous call that fails as a function error.
    FunctionError,
    /// An asynchronous call, accepted with 202.
    Accepted,
}

const MIX: &[Kind] = &[
    Kind {
        name: "soak-echo",
        module: ember_examples::ECHO_REACTOR,
        timeout: 3,
        expect: Expect::Echo,
        weight: 12,
    },
    Kind {
        name: "soak-trap",
        module: ember_examples::TRAP,
        timeout: 3,
        expect: Expect::FunctionError,
        weight: 2,
    },
    Kind {
        name: "soak-oom",
        module: ember_examples::OOM,
        timeout: 3,
        expect: Expect::FunctionError,
        weight: 1,
    },
    Kind {
        name: "soak-init-trap",
        module: ember_examples::INIT_TRAP,
        timeout: 3,
        expect: Expect::FunctionError,
        weight: 1,
    },
    Kind {
        name: "soak-timeout",
        module: ember_examples::LOOP,
        timeout: 1,
        expect: Expect::FunctionError,
        weight: 1,
    },
    Kind {
        name: "soak-echo",
        module: ember_examples::ECHO_REACTOR,
        timeout: 3,
        expect: Expect::Accepted,
        weight: 2,
    },
];

const EVENT: &[u8] = br#"{"soak":true}"#;

/// Counters the clients share.
#[derive(Default)]
struct Counters {
    ok: AtomicU64,
    function_errors: AtomicU64,
    accepted: AtomicU64,
    /// Answers other than expected to calls that overlapped no restart.
    unexpected: AtomicU64,
    /// Failed calls that overlapped a worker restart.
    during_restart: AtomicU64,
    /// Odd while the worker restarts; a call that sees it change overlapped a restart.
    restarts: AtomicU64,
}

/// One sample of this process.
#[derive(Clone, Copy, Debug)]
struct Sample {
    seconds: f64,
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

pub(super) fn soak(args: &SoakArgs, platform: &mut super::Running) -> Result<Value, CliError> {
    let client = platform.client()?;
    for kind in MIX {
        create(&client, kind)?;
    }
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..args.clients.max(1))
        .map(|i| {
            let client = platform.client()?;
            let (counters, stop) = (counters.clone(), stop.clone());
            Ok(std::thread::spawn(move || {
                let round: Vec<&Kind> = MIX
                    .iter()
                    .flat_map(|k| std::iter::repeat_n(k, k.weight))
                    .collect();
                // Clients start at different places in the round.
                for kind in round.iter().cycle().skip(i * 3) {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    call(&client, kind, &counters);
                }
            }))
        })
        .collect::<Result<_, CliError>>()?;

    let started = Instant::now();
    let length = Duration::from_secs_f64(args.minutes.max(0.1) * 60.0);
    let every = Duration::from_secs(args.sample_seconds.max(1));
    let restart_every = length / (args.worker_restarts + 1);
    let mut next_restart = restart_every;
    let mut restarts = 0;
    let mut samples = Vec::new();
    while started.elapsed() < length {
        std::thread::sleep(every.min(length.saturating_sub(started.elapsed())));
        if restarts < args.worker_restarts && started.elapsed() >= next_restart {
            counters.restarts.fetch_add(1, Ordering::SeqCst);
            let began = Instant::now();
            platform.restart_worker()?;
            counters.restarts.fetch_add(1, Ordering::SeqCst);
            restarts += 1;
            next_restart += restart_every;
            report_line(
                args,
                json!({ "worker_restarted_in_s": began.elapsed().as_secs_f64() }),
            );
        }
        let sample = sample(started)?;
        samples.push(sample);
        report_line(
            args,
            json!({
                "t_s": sample.seconds.round(),
                "rss_kib": sample.rss_kib,
                "fds": sample.fds,
                "threads": sample.threads,
                "ok": counters.ok.load(Ordering::Relaxed),
                "function_errors": counters.function_errors.load(Ordering::Relaxed),
                "accepted": counters.accepted.load(Ordering::Relaxed),
                "unexpected": counters.unexpected.load(Ordering::Relaxed),
            }),
        );
    }
    stop.store(true, Ordering::Relaxed);
    for client in clients {
        let _ = client.join();
    }
    Ok(summary(args, &samples, &counters, restarts))
}

/// Creates `kind`'s function with its timeout, unless it exists.
fn create(client: &Client, kind: &Kind) -> Result<(), CliError> {
    let get = Call::new(
        Method::GET,
        format!("/2015-03-31/functions/{}", segment(kind.name)),
        function::subject(kind.name),
    );
    match client.json(get) {
        Ok(_) => return Ok(()),
        Err(CliError::Api { status: 404, .. }) => {}
        Err(e) => return Err(e),
    }
    let zip = code::zip_module(&format!("{}.wasm", kind.name), kind.module);
    let create = Call::new(
        Method::POST,
        "/2015-03-31/functions".to_owned(),
        function::subject(kind.name),
    )
    .json(&json!({
        "FunctionName": kind.name,
        "Runtime": "wasm32-wasip1",
        "Role": function::default_role(client.account_id())?,
        "Timeout": kind.timeout,
        "Code": { "ZipFile": base64(&zip) },
    }));
    client.json(create).map(|_| ())
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// One invocation of `kind`, counted by how it ended.
fn call(client: &Client, kind: &Kind, counters: &Counters) {
    let restarts = counters.restarts.load(Ordering::SeqCst);
    let invocation_type = match kind.expect {
        Expect::Accepted => "Event",
        _ => "RequestResponse",
    };
    let answer = invoke(
        client,
        kind.name,
        None,
        invocation_type,
        false,
        EVENT.to_vec(),
    );
    let counter = match (kind.expect, &answer) {
        (Expect::Echo, Ok(a)) if a.function_error.is_none() && a.payload == EVENT => &counters.ok,
        (Expect::FunctionError, Ok(a)) if a.function_error.is_some() => &counters.function_errors,
        (Expect::Accepted, Ok(a)) if a.status == 202 => &counters.accepted,
        _ if restarts % 2 == 1 || counters.restarts.load(Ordering::SeqCst) != restarts => {
            &counters.during_restart
        }
        _ => {
            let answer = answer.map(|a| (a.status, a.function_error));
            eprintln!("soak: {} answered {answer:?}", kind.name);
            &counters.unexpected
        }
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// This process's resident memory, descriptors and threads now.
fn sample(started: Instant) -> Result<Sample, CliError> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| CliError::Config(format!("reading /proc/self/status: {e}")))?;
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir("/proc/self/fd")
        .map_err(|e| CliError::Config(format!("reading /proc/self/fd: {e}")))?
        .count() as u64;
    Ok(Sample {
        seconds: started.elapsed().as_secs_f64(),
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
    })
}

fn report_line(args: &SoakArgs, line: Value) {
    if args.json {
        println!("{line}");
    } else {
        let fields: Vec<String> = line
            .as_object()
            .into_iter()
            .flatten()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        println!("{}", fields.join("  "));
    }
}

/// How much a resource may grow from the middle third of the run to the last and still
/// count as flat: environments come and go, so memory moves; a leak keeps climbing.
const RSS_SLACK: f64 = 1.25;
const FD_SLACK: u64 = 16;
const THREAD_SLACK: u64 = 8;

/// The run's totals and whether the last third stayed within the middle third's peaks.
fn summary(args: &SoakArgs, samples: &[Sample], counters: &Counters, restarts: u32) -> Value {
    let third = samples.len() / 3;
    let (middle, last) = samples[third..].split_at(third);
    let peak = |part: &[Sample], get: fn(&Sample) -> u64| part.iter().map(get).max().unwrap_or(0);
    let rss = (peak(middle, |s| s.rss_kib), peak(last, |s| s.rss_kib));
    let fds = (peak(middle, |s| s.fds), peak(last, |s| s.fds));
    let threads = (peak(middle, |s| s.threads), peak(last, |s| s.threads));
    let flat = !middle.is_empty()
        && (rss.1 as f64) <= (rss.0 as f64) * RSS_SLACK
        && fds.1 <= fds.0 + FD_SLACK
        && threads.1 <= threads.0 + THREAD_SLACK;
    let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
    json!({
        "minutes": args.minutes,
        "clients": args.clients,
        "worker_restarts": restarts,
        "ok": load(&counters.ok),
        "function_errors": load(&counters.function_errors),
        "accepted": load(&counters.accepted),
        "unexpected": load(&counters.unexpected),
        "failed_during_restart": load(&counters.during_restart),
        "samples": samples.len(),
        "rss_kib_peak": { "middle_third": rss.0, "last_third": rss.1 },
        "fds_peak": { "middle_third": fds.0, "last_third": fds.1 },
        "threads_peak": { "middle_third": threads.0, "last_third": threads.1 },
        "flat": flat,
    })
}
