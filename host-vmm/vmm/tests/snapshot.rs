//! VMs restored from a snapshot of a ready guest behave like freshly booted ones, and do
//! not share writes with each other.

mod common;

use std::time::{Duration, Instant};

use common::{connect, patterned, TIMEOUT};
use ember_vmm::vm::Snapshot;
use ember_vmm::{Vm, VmConfig, VmExit};

#[test]
fn restored_vms_answer_and_stay_independent() {
    let snapshot =
        Snapshot::of_fresh_guest(&VmConfig::default()).expect("taking a snapshot (needs KVM)");
    let mut vms = Vec::new();
    for i in 0..3u32 {
        let start = Instant::now();
        let vm = Vm::restore(&snapshot, &VmConfig::default()).expect("restoring a snapshot");
        let mut client = connect(&vm);
        client.ping().expect("restored guest answers a ping");
        eprintln!("restore {i}: ready in {:?}", start.elapsed());
        let payload = patterned(100_000 + i as usize, i);
        assert_eq!(client.echo(&payload).expect("echo"), payload);
        let info = client.info().expect("info");
        assert_eq!((info.cpl, info.mem_size), (3, 16 << 20));
        vms.push((vm, client));
    }
    // Shutting one down leaves the others running.
    let (first, mut client) = vms.remove(0);
    client.shutdown().expect("shutdown");
    assert_eq!(first.wait(TIMEOUT), Some(VmExit::PoweredOff(0)));
    for (_, client) in vms.iter_mut() {
        client.ping().expect("other restored VMs keep answering");
    }
    // The snapshot itself is untouched: a new VM from it still works.
    let vm = Vm::restore(&snapshot, &VmConfig::default()).unwrap();
    connect(&vm).ping().expect("a VM restored after others ran");
    assert!(vm.wait(Duration::from_millis(10)).is_none());
}
