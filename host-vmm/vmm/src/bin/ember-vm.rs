//! `ember-vm`: the zygote on its own (`ember-vm zygote --config JSON [--test-probes]`, with
//! its channel at fd 3), as `emberd zygote` and `ember zygote` are inside those programs.
//! See `docs/isolation.md`.

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    match args.as_slice() {
        ["zygote", "--config", config] => ember_vmm::process::run_zygote(config, false),
        ["zygote", "--config", config, "--test-probes"] => {
            ember_vmm::process::run_zygote(config, true)
        }
        _ => {
            eprintln!("usage: ember-vm zygote --config JSON [--test-probes] (started by emberd)");
            std::process::exit(2)
        }
    }
}
