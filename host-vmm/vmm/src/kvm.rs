//! The process-wide `/dev/kvm` handle, opened once, and the CPUID every vCPU gets.

use std::sync::OnceLock;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES};
use kvm_ioctls::Kvm;

use crate::vm::VmError;

pub struct KvmSystem {
    pub kvm: Kvm,
    pub cpuid: CpuId,
}

static SYSTEM: OnceLock<Result<KvmSystem, String>> = OnceLock::new();

/// Opens `/dev/kvm` on first use; later calls return the same handle (or the same error).
pub fn system() -> Result<&'static KvmSystem, VmError> {
    SYSTEM
        .get_or_init(|| {
            let kvm = Kvm::new().map_err(|e| {
                format!("cannot open /dev/kvm ({e}); ember needs KVM and access to /dev/kvm")
            })?;
            let cpuid = kvm
                .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
                .map_err(|e| format!("KVM_GET_SUPPORTED_CPUID failed: {e}"))?;
            Ok(KvmSystem { kvm, cpuid })
        })
        .as_ref()
        .map_err(|e| VmError::Kvm(e.clone()))
}
