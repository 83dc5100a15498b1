//! `ember-fuzz`: runs fuzz campaigns longer than CI's and prints one JSON line per target.
//!
//! ```text
//! ember-fuzz [--target NAME]... [--iterations N] [--minutes M] [--seed S]
//! ember-fuzz --replay FILE --target NAME
//! ```

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use clap::Parser;
use ember_fuzz::{run, targets, Campaign};

#[derive(Parser)]
#[command(about = "Fuzz what guests, tenants and strangers feed ember's hosts")]
struct Args {
    /// Targets to run (default: all). `--list` names them.
    #[arg(long = "target")]
    targets: Vec<String>,
    /// List the targets and exit.
    #[arg(long)]
    list: bool,
    /// Inputs per target.
    #[arg(long, default_value_t = 1_000_000)]
    iterations: u64,
    /// Time per target, in minutes (whichever of this and --iterations ends first).
    #[arg(long)]
    minutes: Option<f64>,
    /// Seed of the first target's campaign (default: the clock). Repeating a seed and an
    /// iteration count repeats the campaign.
    #[arg(long)]
    seed: Option<u64>,
    /// Longest input, in bytes.
    #[arg(long, default_value_t = 64 * 1024)]
    max_len: usize,
    /// Where failing inputs are written.
    #[arg(long, default_value = "target/fuzz-failures")]
    failures: PathBuf,
    /// Runs one saved input against the one `--target` and reports what happened.
    #[arg(long)]
    replay: Option<PathBuf>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.list {
        for target in targets::ALL {
            println!("{:<18} fed by {}", target.name, target.fed_by);
        }
        return ExitCode::SUCCESS;
    }
    let chosen: Vec<_> = if args.targets.is_empty() {
        targets::ALL.iter().collect()
    } else {
        let mut chosen = Vec::new();
        for name in &args.targets {
            let Some(target) = targets::by_name(name) else {
                eprintln!("ember-fuzz: no target {name:?} (see --list)");
                return ExitCode::from(2);
            };
            chosen.push(target);
        }
        chosen
    };
    if let Some(path) = &args.replay {
        let [target] = chosen[..] else {
            eprintln!("ember-fuzz: --replay needs exactly one --target");
            return ExitCode::from(2);
        };
        let input = match std::fs::read(path) {
            Ok(input) => input,
            Err(err) => {
                eprintln!("ember-fuzz: cannot read {}: {err}", path.display());
                return ExitCode::from(2);
            }
        };
        println!("{}", (target.run)(&input));
        return ExitCode::SUCCESS;
    }
    let seed = args.seed.unwrap_or_else(|| {
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    let mut failed = false;
    for (i, target) in chosen.into_iter().enumerate() {
        let campaign = Campaign {
            seed: seed.wrapping_add(i as u64),
            iterations: args.iterations,
            time_limit: args.minutes.map(|m| Duration::from_secs_f64(m * 60.0)),
            max_len: args.max_len,
            failures_dir: Some(args.failures.clone()),
        };
        let report = run(target, &campaign);
        let failure = report.failure.as_ref().map(|f| {
            serde_json::json!({
                "message": f.message,
                "saved_to": f.saved_to.as_ref().map(|p| p.display().to_string()),
            })
        });
        failed |= failure.is_some();
        let line = serde_json::json!({
            "target": report.target,
            "seed": report.seed,
            "iterations": report.iterations,
            "seconds": report.elapsed.as_secs_f64(),
            "corpus": report.corpus,
            "outcomes": report.outcomes.len(),
            "failure": failure,
        });
        println!("{line}");
    }
    if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    }
}
