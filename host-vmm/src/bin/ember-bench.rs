//! `ember-bench`: micro-VM benchmarks, reported next to the raw KVM floor measured in the
//! same run so results can be compared as ratios across machines.
//!
//! `cargo run --release -p host-vmm --bin ember-bench -- --json` prints one JSON object.

use std::time::{Duration, Instant};

use clap::Parser;
use host_vmm::{floor, GuestClient, Vm, VmConfig};
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

    let floor = summary(&mut floor_us);
    let boot = summary(&mut boot_us);
    let report = json!({
        "kvm_floor_us": floor,
        "boot_to_ready_us": boot,
        "boot_to_ready_over_floor": ratio(&boot, &floor),
        "vsock_echo_rtt_us": summary(&mut echo_us),
        "rss_per_vm_kib": rss_per_vm_kib,
        "guest_mem_mib": config.mem_mib,
        "samples": { "boots": args.boots, "echoes": args.echoes, "idle_vms": args.idle_vms },
    });
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
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
