//! How a VM ended, in terms a caller can act on and a person can read.

use std::fmt;

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

#[derive(Clone, Debug, PartialEq, Eq)]
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
    GuestError(String),
    /// KVM refused to run the vCPU.
    KvmError(String),
}

impl fmt::Display for VmExit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VmExit::PoweredOff(code) => write!(f, "guest powered off (exit code {code})"),
            VmExit::Panicked(msg) => write!(f, "guest panicked: {msg}"),
            VmExit::Stopped => f.write_str("stopped by the host"),
            VmExit::Fault(fault) => write!(f, "guest fault: {fault}"),
            VmExit::TripleFault => f.write_str("guest triple fault"),
            VmExit::GuestError(msg) => write!(f, "guest error: {msg}"),
            VmExit::KvmError(msg) => write!(f, "KVM error: {msg}"),
        }
    }
}
