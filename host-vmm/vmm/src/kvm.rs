//! The process-wide `/dev/kvm` handle, opened once, the CPUID every vCPU gets (the fixed
//! template of [`crate::cpuid`], checked against what KVM supports), and the VM and vCPU
//! file descriptors made from it.

use std::sync::OnceLock;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};

/// Why KVM could not give us a VM or a vCPU.
#[derive(Clone, Debug, thiserror::Error)]
pub enum KvmError {
    #[error("cannot open /dev/kvm ({0}); ember needs KVM and access to /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    #[error("KVM_GET_SUPPORTED_CPUID failed: {0}")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    #[error("{0}")]
    Cpuid(#[from] crate::cpuid::CpuidError),
    #[error("KVM_CREATE_VM: {0}")]
    CreateVm(#[source] kvm_ioctls::Error),
    #[error("KVM_CREATE_VCPU: {0}")]
    CreateVcpu(#[source] kvm_ioctls::Error),
}

pub struct KvmSystem {
    pub kvm: Kvm,
    /// The CPUID template every vCPU gets.
    pub cpuid: CpuId,
}

static SYSTEM: OnceLock<Result<KvmSystem, KvmError>> = OnceLock::new();

/// Opens `/dev/kvm` on first use; later calls return the same handle (or the same error).
pub fn system() -> Result<&'static KvmSystem, KvmError> {
    SYSTEM
        .get_or_init(|| {
            let kvm = Kvm::new().map_err(KvmError::Open)?;
            let supported = kvm
                .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                .map_err(KvmError::SupportedCpuid)?;
            let cpuid = crate::cpuid::for_kvm(&supported)?;
            Ok(KvmSystem { kvm, cpuid })
        })
        .as_ref()
        .map_err(Clone::clone)
}

/// A new, empty VM.
pub fn create_vm() -> Result<VmFd, KvmError> {
    system()?.kvm.create_vm().map_err(KvmError::CreateVm)
}

/// The VM's one vCPU.
pub fn create_vcpu(vm: &VmFd) -> Result<VcpuFd, KvmError> {
    vm.create_vcpu(0).map_err(KvmError::CreateVcpu)
}

/// Opens `/dev/kvm` (and checks the CPUID template) now, for a process about to lose the
/// right to open files: its descriptor, for the sandbox to keep.
pub fn open_kvm() -> Result<std::os::fd::RawFd, KvmError> {
    use std::os::fd::AsRawFd;
    Ok(system()?.kvm.as_raw_fd())
}
