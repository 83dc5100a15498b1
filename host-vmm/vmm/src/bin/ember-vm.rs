//! `ember-vm`: the program micro-VM processes come from. The worker starts it once as the
//! zygote (`ember-vm zygote --config JSON [--test-probes]`, with its channel at fd 3),
//! which opens `/dev/kvm` and forks one sandboxed process per VM. See
//! `docs/isolation.md`.

use ember_jail::seccomp::{CHANNEL, VM};
use ember_jail::{zygote, JailConfig};
use ember_vmm::process;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: ember-vm zygote --config JSON [--test-probes] (started by emberd)";
    let (Some("zygote"), Some("--config"), Some(config)) = (
        args.first().map(String::as_str),
        args.get(1).map(String::as_str),
        args.get(2),
    ) else {
        fail(usage);
    };
    let config: JailConfig = match serde_json::from_str(config) {
        Ok(config) => config,
        Err(e) => fail(&format!("invalid --config: {e}")),
    };
    let work = match args.get(3).map(String::as_str) {
        None => process::serve,
        Some("--test-probes") => process::serve_with_probes,
        Some(other) => fail(&format!("unexpected argument {other:?}; {usage}")),
    };
    // Opened here, once: VM processes cannot open anything.
    let kvm = match ember_vmm::open_kvm() {
        Ok(fd) => fd,
        Err(e) => fail(&e.to_string()),
    };
    zygote::serve(&config, &[CHANNEL, VM], &[kvm], work)
}

fn fail(message: &str) -> ! {
    eprintln!("ember-vm: {message}");
    std::process::exit(2)
}
