//! The self-test, for qualifying hardware and proving a worker image: boots one micro-VM
//! on this machine's KVM, echoes through it, then runs a wasm function cold and warm in
//! the environment pool, and reports in exactly one line, `ember-selftest: ok ...` with
//! timings or `ember-selftest: FAILED <reason>`. Every step checks what came back.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_vmm::function::{Isolation, Pool, PoolConfig, SpecBuilder};
use ember_vmm::{GuestClient, Vm, VmConfig};

/// The echo reactor (`examples/wat/echo-reactor.wat`), compiled by `build.rs`.
const FUNCTION: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/selftest.wasm"));

/// What each step took.
pub struct Timings {
    /// VM creation to the guest's first answer.
    pub boot: Duration,
    /// One echo round trip.
    pub echo: Duration,
    /// The function's first invocation: a new environment, its init, the call.
    pub cold: Duration,
    /// The second invocation, in the same environment.
    pub warm: Duration,
}

impl fmt::Display for Timings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        write!(
            f,
            "boot={:.1}ms echo={:.2}ms cold={:.1}ms warm={:.2}ms",
            ms(self.boot),
            ms(self.echo),
            ms(self.cold),
            ms(self.warm)
        )
    }
}

/// The one line that reports `result`.
pub fn line(result: &Result<Timings, String>) -> String {
    match result {
        Ok(timings) => format!("ember-selftest: ok {timings}"),
        Err(reason) => format!("ember-selftest: FAILED {reason}"),
    }
}

/// Runs the self-test on the KVM device at `kvm` (the VMM itself opens `/dev/kvm`; the
/// path lets the check be pointed elsewhere).
pub fn run(kvm: &Path) -> Result<Timings, String> {
    check_kvm(kvm)?;
    let (boot, echo) = echo_vm()?;
    let (cold, warm) = invoke_function()?;
    Ok(Timings {
        boot,
        echo,
        cold,
        warm,
    })
}

/// The device opens read-write; if it is missing, why, from the CPU's flags.
fn check_kvm(kvm: &Path) -> Result<(), String> {
    match std::fs::OpenOptions::new().read(true).write(true).open(kvm) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
            Err(format!(
                "{} missing: {}",
                kvm.display(),
                missing_kvm_reason(&cpuinfo)
            ))
        }
        Err(e) => Err(format!("{}: {e}", kvm.display())),
    }
}

/// Why there is no KVM device, from `/proc/cpuinfo`'s flags.
fn missing_kvm_reason(cpuinfo: &str) -> &'static str {
    let has = |flag: &str| {
        cpuinfo
            .lines()
            .filter(|line| line.starts_with("flags"))
            .any(|line| line.split_whitespace().any(|word| word == flag))
    };
    if has("vmx") {
        "the CPU offers VT-x (vmx) but KVM is not loaded: load kvm_intel (and check that the firmware enables VT-x)"
    } else if has("svm") {
        "the CPU offers AMD-V (svm) but KVM is not loaded: load kvm_amd (and check that the firmware enables SVM)"
    } else {
        "the CPU offers no virtualization (no vmx/svm flag in /proc/cpuinfo)"
    }
}

/// Boots guest-init, pings it, echoes through it and shuts it down: boot and echo times.
fn echo_vm() -> Result<(Duration, Duration), String> {
    let start = Instant::now();
    let vm = Vm::boot(&VmConfig {
        mem_mib: 16,
        ..VmConfig::default()
    })
    .map_err(|e| format!("booting a micro-VM: {e}"))?;
    let result = (|| {
        let mut client = GuestClient::connect(&vm, Duration::from_secs(10))
            .map_err(|e| format!("connecting to the guest: {e}"))?;
        client.ping().map_err(|e| format!("ping: {e}"))?;
        let boot = start.elapsed();
        let message = b"ember-selftest echo";
        let t = Instant::now();
        let reply = client.echo(message).map_err(|e| format!("echo: {e}"))?;
        let echo = t.elapsed();
        if reply != message {
            return Err(format!(
                "echo: sent {:?}, got {:?}",
                String::from_utf8_lossy(message),
                String::from_utf8_lossy(&reply)
            ));
        }
        client.shutdown().map_err(|e| format!("shutdown: {e}"))?;
        Ok((boot, echo))
    })();
    if vm.wait(Duration::from_secs(5)).is_none() {
        vm.stop();
    }
    result
}

/// Invokes the echo function twice (cold, then warm in the same environment) and checks
/// both answers: their wall-clock times.
fn invoke_function() -> Result<(Duration, Duration), String> {
    let spec = SpecBuilder {
        name: "selftest".into(),
        memory_mib: 16,
        isolation: Isolation::Reuse,
        ..SpecBuilder::default()
    }
    .build(FUNCTION)
    .map_err(|e| format!("the self-test function: {e}"))?;
    let pool = Pool::new(
        PoolConfig {
            spare_vms: 0,
            ..PoolConfig::default()
        },
        Arc::new(|_: &ember_vmm::function::FunctionSpec, _: &[u8]| {}),
    );
    let mut times = [Duration::ZERO; 2];
    for (i, time) in times.iter_mut().enumerate() {
        let payload = format!("{{\"selftest\":{i}}}");
        let start = Instant::now();
        let inv = pool.invoke(&spec, payload.as_bytes());
        *time = start.elapsed();
        let which = if i == 0 { "cold" } else { "warm" };
        if let Some(error) = &inv.error {
            return Err(format!("{which} invocation: {error}"));
        }
        if inv.output != payload.as_bytes() {
            return Err(format!(
                "{which} invocation: expected {payload}, got {:?}",
                String::from_utf8_lossy(&inv.output)
            ));
        }
        if inv.cold != (i == 0) {
            return Err(format!(
                "{which} invocation: the pool says cold={}",
                inv.cold
            ));
        }
    }
    Ok((times[0], times[1]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_device_is_explained_by_the_cpu_flags() {
        let flags = |f: &str| format!("processor\t: 0\nflags\t\t: fpu sse2 {f} lm\n");
        assert!(missing_kvm_reason(&flags("vmx")).contains("kvm_intel"));
        assert!(missing_kvm_reason(&flags("svm")).contains("kvm_amd"));
        assert_eq!(
            missing_kvm_reason(&flags("ht")),
            "the CPU offers no virtualization (no vmx/svm flag in /proc/cpuinfo)"
        );
    }

    #[test]
    fn one_line_either_way() {
        let ok = line(&Ok(Timings {
            boot: Duration::from_micros(12_340),
            echo: Duration::from_micros(110),
            cold: Duration::from_micros(30_200),
            warm: Duration::from_micros(1_100),
        }));
        assert_eq!(
            ok,
            "ember-selftest: ok boot=12.3ms echo=0.11ms cold=30.2ms warm=1.10ms"
        );
        assert_eq!(
            line(&Err("/dev/kvm missing: x".into())),
            "ember-selftest: FAILED /dev/kvm missing: x"
        );
    }
}
