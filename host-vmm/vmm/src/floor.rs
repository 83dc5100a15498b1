//! The raw KVM floor on this machine: create a VM with one vCPU, run a few bytes of ring-3
//! code to one port-I/O exit, destroy it. Benchmarks report ratios to this, so their
//! numbers survive noisy or differently sized machines.

use std::time::{Duration, Instant};

use ember_wire::layout::{DOORBELL_KICK_PORT, IMAGE_BASE, MIN_MEMORY};
use kvm_ioctls::VcpuExit;
use vm_memory::{Bytes, GuestAddress, GuestMemoryError};

use crate::kvm::{self, KvmError};
use crate::memory::{self, MemoryError};
use crate::vm::{self, RegisterError, TablesError};

/// Why the floor could not be measured.
#[derive(Debug, thiserror::Error)]
pub enum FloorError {
    #[error("KVM: {0}")]
    Kvm(#[from] KvmError),
    #[error("{0}")]
    Memory(#[from] MemoryError),
    #[error("{0}")]
    SystemTables(#[from] TablesError),
    #[error("writing the floor code: {0}")]
    Code(#[source] GuestMemoryError),
    #[error("KVM: {0}")]
    Registers(#[from] RegisterError),
    #[error("KVM_RUN: {0}")]
    Run(#[source] kvm_ioctls::Error),
    /// The exit, the vCPU's `rip` and `rflags`, and its code and task segments.
    #[error("floor VM exited with {0}")]
    UnexpectedExit(String),
}

/// `mov dx, DOORBELL_KICK_PORT; out dx, al; jmp $`
fn code() -> [u8; 7] {
    let [lo, hi] = DOORBELL_KICK_PORT.to_le_bytes();
    [0x66, 0xba, lo, hi, 0xee, 0xeb, 0xfe]
}

/// One floor measurement.
pub fn kvm_floor() -> Result<Duration, FloorError> {
    let sys = kvm::system()?;
    let start = Instant::now();
    let vm = kvm::create_vm()?;
    let mem = memory::create(&vm, MIN_MEMORY, &memory::Backing::Anonymous, false)?;
    vm::write_system_tables(&mem, MIN_MEMORY, None)?;
    mem.write_slice(&code(), GuestAddress(IMAGE_BASE))
        .map_err(FloorError::Code)?;
    let mut vcpu = kvm::create_vcpu(&vm)?;
    let entry = vm::Entry {
        rip: IMAGE_BASE,
        rsp: MIN_MEMORY - 8,
        arg: 0,
    };
    vm::configure_vcpu(&vcpu, &sys.cpuid, &entry, false)?;
    match vcpu.run() {
        Ok(VcpuExit::IoOut(DOORBELL_KICK_PORT, _)) => {}
        Ok(other) => {
            let o = format!("{other:?}");
            return Err(FloorError::UnexpectedExit(format!(
                "{o} {:?} {:?}",
                vcpu.get_regs().map(|r| (r.rip, r.rflags)),
                vcpu.get_sregs().map(|s| (s.cs.dpl, s.cs.selector, s.tr))
            )));
        }
        Err(e) => return Err(FloorError::Run(e)),
    }
    drop(vcpu);
    drop(vm);
    drop(mem);
    Ok(start.elapsed())
}
