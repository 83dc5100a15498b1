//! How a VM ended, in terms a caller can act on and a person can read.

use std::fmt;
use std::sync::Arc;

use super::registers::RegisterError;
use super::warm::WarmError;
use crate::devices::vsock::VsockError;

/// A CPU exception the guest took, as reported by its ring-0 stub.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GuestFault {
    pub vector: u8,
    pub error_code: u64,
    pub rip: u64,
    /// The stack pointer when the fault happened.
    pub rsp: u64,
    /// Faulting address for page faults.
    pub cr2: u64,
}

const NAMES: [&str; 21] = [
    "#DE divide error",
    "#DB debug",
    "NMI",
    "#BP breakpoint",
    "#OF overflow",
    "#BR bound range",
    "#UD invalid opcode",
    "#NM device not available",
    "#DF double fault",
    "coprocessor segment overrun",
    "#TS invalid TSS",
    "#NP segment not present",
    "#SS stack fault",
    "#GP general protection",
    "#PF page fault",
    "reserved",
    "#MF x87 floating point",
    "#AC alignment check",
    "#MC machine check",
    "#XM SIMD floating point",
    "#VE virtualization",
];

impl fmt::Display for GuestFault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = NAMES.get(self.vector as usize).unwrap_or(&"exception");
        write!(
            f,
            "{name} (vector {}) at rip {:#x} (rsp {:#x}), error code {:#x}",
            self.vector, self.rip, self.rsp, self.error_code
        )?;
        if self.vector == 14 {
            write!(f, ", address {:#x}", self.cr2)?;
        }
        Ok(())
    }
}

/// How the guest broke its contract with the VMM.
#[derive(Debug, thiserror::Error)]
pub enum GuestError {
    #[error("{0}")]
    Device(#[from] VsockError),
    #[error("access to unbacked guest address {0:#x}")]
    Unbacked(u64),
    #[error("guest halted")]
    Halted,
    /// The debug rendering of the exit (it borrows the vCPU, so it is not kept).
    #[error("unexpected VM exit {0}")]
    UnexpectedExit(String),
}

/// Why KVM could not go on running the vCPU.
#[derive(Debug, thiserror::Error)]
pub enum VcpuError {
    #[error("KVM_RUN: {0}")]
    Run(#[source] kvm_ioctls::Error),
    #[error("VM entry failed (hardware reason {0:#x})")]
    FailEntry(u64),
    #[error("KVM internal error (instruction emulation failed)")]
    Internal,
    #[error("reading fault registers: {0}")]
    FaultRegisters(#[source] kvm_ioctls::Error),
    #[error("capturing the paused vCPU: {0}")]
    Capture(#[source] RegisterError),
    #[error("trimming guest memory: {0}")]
    Trim(#[source] WarmError),
    #[error("confining the vCPU thread: {0}")]
    Confine(String),
}

#[derive(Clone, Debug)]
pub enum VmExit {
    /// The guest powered off with this exit code.
    PoweredOff(u32),
    /// The guest panicked; the last line of its log.
    Panicked(String),
    /// The host stopped the vCPU.
    Stopped,
    /// The guest took a CPU exception.
    Fault(GuestFault),
    /// The guest faulted while handling a fault.
    TripleFault,
    /// The guest broke the device contract or touched an address with nothing behind it.
    GuestError(Arc<GuestError>),
    /// KVM refused to run the vCPU.
    KvmError(Arc<VcpuError>),
}

impl VmExit {
    pub fn guest(error: impl Into<GuestError>) -> VmExit {
        VmExit::GuestError(Arc::new(error.into()))
    }

    pub fn kvm(error: VcpuError) -> VmExit {
        VmExit::KvmError(Arc::new(error))
    }
}

/// Two exits are equal when they end the VM the same way and, for errors, say the same.
impl PartialEq for VmExit {
    fn eq(&self, other: &VmExit) -> bool {
        use VmExit::*;
        match (self, other) {
            (PoweredOff(a), PoweredOff(b)) => a == b,
            (Panicked(a), Panicked(b)) => a == b,
            (Stopped, Stopped) | (TripleFault, TripleFault) => true,
            (Fault(a), Fault(b)) => a == b,
            (GuestError(a), GuestError(b)) => a.to_string() == b.to_string(),
            (KvmError(a), KvmError(b)) => a.to_string() == b.to_string(),
            _ => false,
        }
    }
}

impl Eq for VmExit {}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExit::PoweredOff(code) => write!(f, "guest powered off (exit code {code})"),
            VmExit::Panicked(msg) => write!(f, "guest panicked: {msg}"),
            VmExit::Stopped => f.write_str("stopped by the host"),
            VmExit::Fault(fault) => write!(f, "guest fault: {fault}"),
            VmExit::TripleFault => f.write_str("guest triple fault"),
            VmExit::GuestError(e) => write!(f, "guest error: {e}"),
            VmExit::KvmError(e) => write!(f, "KVM error: {e}"),
        }
    }
}

/// The end of a VM is the error of everything that needed it running (its streams).
impl std::error::Error for VmExit {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            VmExit::GuestError(e) => Some(&**e),
            VmExit::KvmError(e) => Some(&**e),
            _ => None,
        }
    }
}
