//! The raw KVM floor on this machine: create a VM with one vCPU, run a few bytes of ring-3
//! code to one port-I/O exit, destroy it. Benchmarks report ratios to this, so their
//! numbers survive noisy or differently sized machines.

use std::time::{Duration, Instant};

use ember_wire::layout::{DOORBELL_KICK_PORT, IMAGE_BASE, MIN_MEMORY};
use kvm_ioctls::VcpuExit;
use vm_memory::{Bytes, GuestAddress};

use crate::kvm;
use crate::vm::{cpu, memory, VmError};

/// `mov dx, DOORBELL_KICK_PORT; out dx, al; jmp $`
fn code() -> [u8; 7] {
    let [lo, hi] = DOORBELL_KICK_PORT.to_le_bytes();
    [0x66, 0xba, lo, hi, 0xee, 0xeb, 0xfe]
}

/// One floor measurement.
pub fn kvm_floor() -> Result<Duration, VmError> {
    let sys = kvm::system()?;
    let start = Instant::now();
    let vm = sys
        .kvm
        .create_vm()
        .map_err(|e| VmError::Kvm(format!("KVM_CREATE_VM: {e}")))?;
    let mem = memory::create(&vm, MIN_MEMORY, &memory::Backing::Anonymous, false)?;
    cpu::write_system_tables(&mem, MIN_MEMORY, None)?;
    mem.write_slice(&code(), GuestAddress(IMAGE_BASE))
        .map_err(|e| VmError::Setup(e.to_string()))?;
    let mut vcpu = vm
        .create_vcpu(0)
        .map_err(|e| VmError::Kvm(format!("KVM_CREATE_VCPU: {e}")))?;
    let entry = cpu::Entry {
        rip: IMAGE_BASE,
        rsp: MIN_MEMORY - 8,
        arg: 0,
    };
    crate::vm::configure_vcpu(&vcpu, &sys.cpuid, &entry, false)?;
    match vcpu.run() {
        Ok(VcpuExit::IoOut(DOORBELL_KICK_PORT, _)) => {}
        Ok(other) => {
            let o = format!("{other:?}");
            return Err(VmError::Kvm(format!(
                "floor VM exited with {o} {:?} {:?}",
                vcpu.get_regs().map(|r| (r.rip, r.rflags)),
                vcpu.get_sregs().map(|s| (s.cs.dpl, s.cs.selector, s.tr))
            )));
        }
        Err(e) => return Err(VmError::Kvm(format!("KVM_RUN: {e}"))),
    }
    drop(vcpu);
    drop(vm);
    drop(mem);
    Ok(start.elapsed())
}
