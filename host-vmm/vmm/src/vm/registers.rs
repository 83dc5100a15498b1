//! A vCPU's register state: loading it (at entry, from a snapshot, after a command) and
//! capturing it while the guest is parked between two instructions.

use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs, CpuId};
use kvm_ioctls::VcpuFd;

use super::cpu;

/// The registers a snapshot keeps.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub struct VcpuState {
    #[serde(with = "kvm_abi")]
    pub regs: kvm_regs,
    #[serde(with = "kvm_abi")]
    pub sregs: kvm_sregs,
    #[serde(with = "kvm_abi")]
    pub fpu: kvm_fpu,
}

/// KVM's register structures as their bytes, to cross processes. They are plain C structs
/// of integers and arrays of integers, for which every byte pattern is a valid value (and
/// KVM checks what it is given).
mod kvm_abi {
    use kvm_bindings::{kvm_fpu, kvm_regs, kvm_sregs};
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    /// The structures this module may see as bytes.
    pub trait Plain: Copy {}
    impl Plain for kvm_regs {}
    impl Plain for kvm_sregs {}
    impl Plain for kvm_fpu {}

    pub fn serialize<T: Plain, S: Serializer>(value: &T, s: S) -> Result<S::Ok, S::Error> {
        // SAFETY: `T` is one of KVM's plain structs (see `Plain`): reading its bytes is
        // reading integers, and the slice lives no longer than `value`.
        let bytes =
            unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), size_of::<T>()) };
        s.serialize_bytes(bytes)
    }

    pub fn deserialize<'de, T: Plain, D: Deserializer<'de>>(d: D) -> Result<T, D::Error> {
        let bytes = Vec::<u8>::deserialize(d)?;
        if bytes.len() != size_of::<T>() {
            return Err(D::Error::invalid_length(
                bytes.len(),
                &"the structure's size",
            ));
        }
        // SAFETY: exactly `size_of::<T>()` bytes, and any bytes make a valid `T` (`Plain`).
        Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
    }
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
