//! `ember-vm`: the zygote on its own (`ember-vm zygote --config JSON [--test-probes]`, with
//! its channel at fd 3), as `emberd zygote` and `ember zygote` are inside those programs.
//! See `docs/isolation.md`.

use clap::Parser;
use ember_vmm::process::ZygoteArgs;

#[derive(Parser)]
#[command(name = "ember-vm", about = "the micro-VM zygote (started by emberd)")]
enum Cli {
    /// Fork sandboxed VM processes for the worker on fd 3.
    Zygote(ZygoteArgs),
}

fn main() {
    let Cli::Zygote(args) = Cli::parse();
    args.run()
}
