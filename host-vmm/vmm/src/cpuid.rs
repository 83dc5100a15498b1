//! The CPUID every guest gets: a fixed template, the same on every worker, instead of what
//! the host's KVM supports. A snapshot taken on one worker then restores on another with
//! the CPU it was taken with, and a guest learns nothing of the host's model, serial
//! number, cache topology or extensions.
//!
//! The template is the x86_64 baseline guest-init and the VMM's entry state need (long mode,
//! NX for the page tables, x87/MMX/SSE/SSE2 and FXSR for the FPU state KVM saves, the TSC
//! for the guest's clock, PAE/PSE/CX8/CMOV) with the hypervisor bit set. guest-init is built
//! for `x86_64-unknown-none` (soft float) and its engine, wasmi, interprets: neither
//! detects features at run time. Its leaves are fixed and vendor-neutral: basic leaves up
//! to 1, extended leaves up to `0x8000_0008`, a made-up vendor and brand string, zero
//! cache and topology leaves. Each feature bit must also be one KVM supports on this host,
//! or the VMM refuses to start VMs ([`CpuidError`]).

use kvm_bindings::{kvm_cpuid_entry2, CpuId};

/// `"EmberGuestVM"`, as CPUID leaf 0 returns it in EBX, EDX, ECX.
const VENDOR: [u8; 12] = *b"EmberGuestVM";
/// The brand string of leaves `0x8000_0002..=0x8000_0004` (48 bytes, zero padded).
const BRAND: &[u8] = b"ember virtual CPU";
/// Physical and linear address bits (leaf `0x8000_0008`): guest memory ends below 4 GiB,
/// and 36 physical bits is what every x86_64 CPU has at least.
const PHYS_BITS: u32 = 36;
const LINEAR_BITS: u32 = 48;

/// One template feature: leaf, register (0 eax .. 3 edx), bit, name.
struct Feature(u32, usize, u32, &'static str);

const ECX: usize = 2;
const EDX: usize = 3;

/// What every guest gets, and every worker's KVM must support.
const REQUIRED: [Feature; 12] = [
    Feature(1, EDX, 0, "FPU"),
    Feature(1, EDX, 3, "PSE"),
    Feature(1, EDX, 4, "TSC"),
    Feature(1, EDX, 6, "PAE"),
    Feature(1, EDX, 8, "CX8"),
    Feature(1, EDX, 15, "CMOV"),
    Feature(1, EDX, 23, "MMX"),
    Feature(1, EDX, 24, "FXSR"),
    Feature(1, EDX, 25, "SSE"),
    Feature(1, EDX, 26, "SSE2"),
    Feature(0x8000_0001, EDX, 20, "NX"),
    Feature(0x8000_0001, EDX, 29, "LM"),
];

/// Leaf 1 ECX bit 31: running under a hypervisor. Set whatever KVM reports.
const HYPERVISOR: u32 = 1 << 31;

/// One CPUID leaf: `function`, `index` (subleaf), then EAX, EBX, ECX, EDX.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Leaf {
    pub function: u32,
    pub index: u32,
    pub regs: [u32; 4],
}

fn le_words(bytes: &[u8]) -> impl Iterator<Item = u32> + '_ {
    bytes
        .chunks(4)
        .map(|c| c.iter().rev().fold(0u32, |w, b| (w << 8) | u32::from(*b)))
}

/// The template, leaf by leaf (every leaf up to each range's maximum is listed).
pub fn template() -> Vec<Leaf> {
    let mut features = [[0u32; 4]; 2];
    for Feature(leaf, reg, bit, _) in &REQUIRED {
        features[usize::from(*leaf != 1)][*reg] |= 1 << bit;
    }
    let vendor: Vec<u32> = le_words(&VENDOR).collect();
    let mut brand = [0u8; 48];
    brand[..BRAND.len()].copy_from_slice(BRAND);
    let brand: Vec<u32> = le_words(&brand).collect();
    let leaf = |function, regs| Leaf {
        function,
        index: 0,
        regs,
    };
    let mut leaves = vec![
        // Highest basic leaf, vendor in EBX, EDX, ECX.
        leaf(0, [1, vendor[0], vendor[2], vendor[1]]),
        // Family 6, model 0, stepping 0; no brand index, CLFLUSH size or APIC id.
        leaf(
            1,
            [0x600, 0, features[0][ECX] | HYPERVISOR, features[0][EDX]],
        ),
        leaf(0x8000_0000, [0x8000_0008, 0, 0, 0]),
        leaf(0x8000_0001, [0, 0, features[1][ECX], features[1][EDX]]),
    ];
    for (i, words) in brand.chunks(4).enumerate() {
        leaves.push(leaf(
            0x8000_0002 + i as u32,
            [words[0], words[1], words[2], words[3]],
        ));
    }
    for function in 0x8000_0005..=0x8000_0007 {
        leaves.push(leaf(function, [0; 4]));
    }
    leaves.push(leaf(0x8000_0008, [PHYS_BITS | (LINEAR_BITS << 8), 0, 0, 0]));
    leaves
}

/// This host's KVM cannot give guests the template.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CpuidError {
    #[error(
        "this host's KVM does not offer CPU features every ember guest gets: {}",
        .0.join(", ")
    )]
    Missing(Vec<&'static str>),
    #[error("this host's KVM offers {0} physical address bits; ember guests get {PHYS_BITS}")]
    PhysBits(u32),
    #[error("building the CPUID table: {0}")]
    Table(String),
}

/// The template as KVM takes it, checked against what KVM `supported`.
pub fn for_kvm(supported: &CpuId) -> Result<CpuId, CpuidError> {
    let find = |function: u32| {
        supported
            .as_slice()
            .iter()
            .find(|e| e.function == function && e.index == 0)
    };
    let reg = |e: &kvm_cpuid_entry2, r: usize| [e.eax, e.ebx, e.ecx, e.edx][r];
    let missing: Vec<&'static str> = REQUIRED
        .iter()
        .filter(|Feature(leaf, r, bit, _)| find(*leaf).is_none_or(|e| reg(e, *r) & (1 << bit) == 0))
        .map(|f| f.3)
        .collect();
    if !missing.is_empty() {
        return Err(CpuidError::Missing(missing));
    }
    if let Some(e) = find(0x8000_0008) {
        let bits = e.eax & 0xff;
        if bits < PHYS_BITS {
            return Err(CpuidError::PhysBits(bits));
        }
    }
    let entries: Vec<kvm_cpuid_entry2> = template()
        .into_iter()
        .map(|l| kvm_cpuid_entry2 {
            function: l.function,
            index: l.index,
            flags: 0,
            eax: l.regs[0],
            ebx: l.regs[1],
            ecx: l.regs[2],
            edx: l.regs[3],
            ..Default::default()
        })
        .collect();
    CpuId::from_entries(&entries).map_err(|e| CpuidError::Table(format!("{e:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn supported(leaf1_edx: u32, ext_edx: u32) -> CpuId {
        CpuId::from_entries(&[
            kvm_cpuid_entry2 {
                function: 1,
                edx: leaf1_edx,
                ..Default::default()
            },
            kvm_cpuid_entry2 {
                function: 0x8000_0001,
                edx: ext_edx,
                ..Default::default()
            },
        ])
        .unwrap()
    }

    #[test]
    fn the_template_is_fixed_and_names_no_host() {
        let t = template();
        assert_eq!(t[0].regs[0], 1, "highest basic leaf");
        let vendor: Vec<u8> = [t[0].regs[1], t[0].regs[3], t[0].regs[2]]
            .iter()
            .flat_map(|w| w.to_le_bytes())
            .collect();
        assert_eq!(vendor, b"EmberGuestVM");
        assert_ne!(t[1].regs[2] & HYPERVISOR, 0);
        assert_eq!(t.last().unwrap().function, 0x8000_0008);
        let brand: Vec<u8> = t[4..7]
            .iter()
            .flat_map(|l| l.regs.iter().flat_map(|w| w.to_le_bytes()))
            .collect();
        assert!(brand.starts_with(b"ember virtual CPU\0"));
        assert_eq!(template(), t, "the same every time");
    }

    #[test]
    fn a_host_without_a_required_feature_is_refused_by_name() {
        let all = u32::MAX;
        assert!(for_kvm(&supported(all, all)).is_ok());
        let err = for_kvm(&supported(all & !(1 << 26), all & !(1 << 20))).unwrap_err();
        assert_eq!(err, CpuidError::Missing(vec!["SSE2", "NX"]));
        assert!(err.to_string().contains("SSE2, NX"), "{err}");
    }
}
