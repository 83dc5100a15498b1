//! The VM benchmarks' samples: boot to ready, and RSS per idle VM.

use std::time::{Duration, Instant};

use ember_vmm::{GuestClient, Vm, VmConfig};

use crate::measure::rss_kib;
use crate::{Error, TIMEOUT};

/// From nothing to the guest answering its first ping; includes tearing the VM down
/// afterwards only in the wall time of the loop, not in the sample.
pub fn boot_to_ready(config: &VmConfig) -> Result<Duration, Error> {
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
pub fn rss_per_idle_vm(config: &VmConfig, count: usize) -> Result<f64, Error> {
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
