//! A vCPU's register state: loading it (at entry, from a snapshot, after a command) and
//! capturing it while the guest is parked between two instructions.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs, CpuId};
use kvm_ioctls::VcpuFd;

use super::cpu;

/// The registers a snapshot keeps.
#[derive(Clone)]
pub struct VcpuState {
    pub regs: kvm_regs,
    pub sregs: kvm_sregs,
    pub fpu: kvm_fpu,
}

/// Why KVM refused to load or give up a register state.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("KVM_SET_CPUID2: {0}")]
    SetCpuid(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_SREGS: {0}")]
    SetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_REGS: {0}")]
    SetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_SET_FPU: {0}")]
    SetFpu(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_REGS: {0}")]
    GetRegs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_SREGS: {0}")]
    GetSregs(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_FPU: {0}")]
    GetFpu(#[source] kvm_ioctls::Error),
    #[error("completing the last exit: {0}")]
    CompleteExit(#[source] kvm_ioctls::Error),
    /// The debug rendering of the exit (it borrows the vCPU, so it is not kept).
    #[error("unexpected exit while completing the last one: {0}")]
    UnexpectedExit(String),
}

/// Loads CPUID and the ring-3 entry state into a fresh vCPU.
pub fn configure(
    vcpu: &VcpuFd,
    cpuid: &CpuId,
    entry: &cpu::Entry,
    fault_stubs: bool,
) -> Result<(), RegisterError> {
    set_state(
        vcpu,
        cpuid,
        &VcpuState {
            regs: cpu::regs(entry),
            sregs: cpu::sregs(Default::default(), fault_stubs),
            fpu: cpu::fpu(),
        },
    )
}

/// Loads CPUID and a register state into a fresh vCPU.
pub fn set_state(vcpu: &VcpuFd, cpuid: &CpuId, state: &VcpuState) -> Result<(), RegisterError> {
    vcpu.set_cpuid2(cpuid).map_err(RegisterError::SetCpuid)?;
    load(vcpu, state)
}

/// Loads a register state (into a fresh vCPU, or one that is paused between two
/// instructions).
pub fn load(vcpu: &VcpuFd, state: &VcpuState) -> Result<(), RegisterError> {
    vcpu.set_sregs(&state.sregs)
        .map_err(RegisterError::SetSregs)?;
    vcpu.set_regs(&state.regs).map_err(RegisterError::SetRegs)?;
    vcpu.set_fpu(&state.fpu).map_err(RegisterError::SetFpu)
}

/// Finishes the port write the guest last exited on: KVM completes it on the next entry,
/// and `immediate_exit` returns before running a single guest instruction.
pub fn complete_exit(vcpu: &mut VcpuFd) -> Result<(), RegisterError> {
    vcpu.set_kvm_immediate_exit(1);
    let entry = vcpu.run().map(|exit| format!("{exit:?}"));
    vcpu.set_kvm_immediate_exit(0);
    match entry {
        Err(e) if e.errno() == libc::EINTR => Ok(()),
        Err(e) => Err(RegisterError::CompleteExit(e)),
        Ok(exit) => Err(RegisterError::UnexpectedExit(exit)),
    }
}

/// Completes the doorbell the guest is parked on, then reads the registers: the state of a
/// guest between two instructions.
pub fn capture(vcpu: &mut VcpuFd) -> Result<VcpuState, RegisterError> {
    complete_exit(vcpu)?;
    let mut sregs = vcpu.get_sregs().map_err(RegisterError::GetSregs)?;
    // KVM reports TR as busy; a state restored from it must keep the type entry gets.
    sregs.tr.type_ = cpu::tss_type();
    Ok(VcpuState {
        regs: vcpu.get_regs().map_err(RegisterError::GetRegs)?,
        sregs,
        fpu: vcpu.get_fpu().map_err(RegisterError::GetFpu)?,
    })
}
