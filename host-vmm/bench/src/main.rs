//! `ember-bench`: micro-VM benchmarks, reported next to the raw KVM floor measured in the
//! same run so results can be compared as ratios across machines.
//!
//! `cargo run --release -p ember-bench -- --json` prints one JSON object.

mod functions;
mod jailed;
mod measure;
mod vms;

use std::time::{Duration, Instant};

use clap::Parser;
use ember_vmm::{floor, GuestClient, Vm, VmConfig};
use serde_json::json;

use functions::function_benchmarks;
use jailed::jailed_benchmarks;
use measure::{micros, ratio, summary};
use vms::{boot_to_ready, rss_per_idle_vm};

/// Any error, to print and exit with.
type Error = Box<dyn std::error::Error>;

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
    #[command(subcommand)]
    zygote: Option<Zygote>,
}

/// The sandboxed measurements start this program again as their VM zygote.
#[derive(clap::Subcommand)]
enum Zygote {
    #[command(hide = true)]
    Zygote(ember_vmm::process::ZygoteArgs),
}

const TIMEOUT: Duration = Duration::from_secs(10);

fn main() {
    let args = Args::parse();
    if let Some(Zygote::Zygote(zygote)) = &args.zygote {
        zygote.run();
    }
    if let Err(e) = run(&args) {
        eprintln!("ember-bench: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Error> {
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
    let jailed = jailed_benchmarks(args)?;

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
    report
        .as_object_mut()
        .expect("an object")
        .extend(jailed.as_object().expect("an object").clone());
    if args.json {
        println!("{report}");
    } else {
        println!("{}", serde_json::to_string_pretty(&report)?);
    }
    Ok(())
}
