//! Guests see the fixed CPUID template (`ember_vmm::cpuid`), not the host's CPU: a booted
//! guest and one restored from a snapshot both report exactly the template.

mod common;

use std::path::Path;

use common::{boot_with_test_frames, connect};
use ember_vmm::cpuid::{template, Leaf};
use ember_vmm::vm::Snapshot;
use ember_vmm::{Vm, VmConfig};
use ember_wire::frame::Kind;

/// What the guest's CPUID instruction returns for each of `leaves`.
fn guest_cpuid(vm: &Vm, leaves: &[(u32, u32)]) -> Vec<[u32; 4]> {
    let request: Vec<u8> = leaves
        .iter()
        .flat_map(|(leaf, sub)| leaf.to_le_bytes().into_iter().chain(sub.to_le_bytes()))
        .collect();
    let reply = connect(vm)
        .request(Kind::TestCpuid, &request, Kind::TestCpuidReply)
        .expect("the guest reports its CPUID");
    let words: Vec<u32> = reply
        .payload
        .chunks_exact(4)
        .map(|w| u32::from_le_bytes(w.try_into().unwrap()))
        .collect();
    words
        .chunks_exact(4)
        .map(|r| [r[0], r[1], r[2], r[3]])
        .collect()
}

fn assert_sees_the_template(vm: &Vm) {
    let expected = template();
    let asked: Vec<(u32, u32)> = expected.iter().map(|l| (l.function, l.index)).collect();
    let seen = guest_cpuid(vm, &asked);
    assert_eq!(seen.len(), expected.len());
    let pvm = Path::new("/sys/module/kvm_pvm").exists();
    let differ: Vec<String> = expected
        .iter()
        .zip(&seen)
        .filter(|(leaf, got)| {
            if pvm && leaf.function == 1 {
                // PVM answers a ring-3 CPUID with the hardware's leaf-1 feature words
                // (ring-3 code runs natively there, every feature usable): they must still
                // hold the template's, and the rest of the leaf is the template's.
                let holds = |r: usize| got[r] & leaf.regs[r] == leaf.regs[r];
                return got[..2] != leaf.regs[..2] || !holds(2) || !holds(3);
            }
            leaf.regs != **got
        })
        .map(|(Leaf { function, regs, .. }, got)| {
            format!("leaf {function:#x}: the guest sees {got:08x?}, the template says {regs:08x?}")
        })
        .collect();
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}

#[test]
fn a_guest_sees_exactly_the_cpuid_template() {
    assert_sees_the_template(&boot_with_test_frames());
}

#[test]
fn a_restored_guest_sees_the_same_template() {
    let snapshot = Snapshot::of_fresh_guest(&VmConfig {
        test_frames: true,
        ..VmConfig::default()
    })
    .expect("taking a snapshot (needs KVM)");
    let vm = Vm::restore(&snapshot, &VmConfig::default()).expect("restoring");
    assert_sees_the_template(&vm);
}
