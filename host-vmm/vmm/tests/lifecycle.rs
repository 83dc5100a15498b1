//! VM configuration checks and the ways a VM's life ends from the host's side.

mod common;

use std::time::{Duration, Instant};

use common::{assert_same_bytes, boot, boot_default, connect, patterned, TIMEOUT};
use ember_vmm::{ClientError, Vm, VmConfig, VmError, VmExit};

#[test]
fn supported_memory_sizes_boot_and_are_reported() {
    for mem_mib in [8u32, 64] {
        let vm = boot(&VmConfig {
            mem_mib,
            ..VmConfig::default()
        });
        let mut client = connect(&vm);
        client
            .ping()
            .unwrap_or_else(|e| panic!("ping to a {mem_mib} MiB VM failed: {e}"));
        let info = client
            .info()
            .unwrap_or_else(|e| panic!("info from a {mem_mib} MiB VM failed: {e}"));
        assert_eq!(
            info.mem_size,
            u64::from(mem_mib) << 20,
            "a {mem_mib} MiB VM reports {} bytes of RAM",
            info.mem_size
        );
        let sent = patterned(64 * 1024, mem_mib);
        let got = client
            .echo(&sent)
            .unwrap_or_else(|e| panic!("64 KiB echo on a {mem_mib} MiB VM failed: {e}"));
        assert_same_bytes(&got, &sent, &format!("64 KiB echo on a {mem_mib} MiB VM"));
    }
}

#[test]
fn unsupported_memory_sizes_are_refused() {
    // 2 and 6: below the 8 MiB minimum; 3 and 9: not multiples of 2 MiB;
    // 4096: above the MMIO window at 3.25 GiB.
    for mem_mib in [0u32, 2, 3, 6, 9, 4096] {
        let result = Vm::boot(&VmConfig {
            mem_mib,
            ..VmConfig::default()
        });
        match result {
            Err(VmError::Config(_)) => {}
            Err(other) => panic!("mem_mib {mem_mib}: expected VmError::Config, got {other:?}"),
            Ok(vm) => panic!(
                "mem_mib {mem_mib} was accepted (VM {} booted); it must be refused",
                vm.id()
            ),
        }
    }
    // The refusals left nothing behind that stops a good VM from booting.
    let vm = boot_default();
    connect(&vm)
        .ping()
        .expect("ping after refused configurations failed");
    assert_eq!(
        vm.wait(Duration::from_millis(1)),
        None,
        "VM ended on its own"
    );
}

#[test]
fn invalid_guest_cid_is_refused() {
    for guest_cid in [0u64, 1, 2, u64::from(u32::MAX) + 1] {
        match Vm::boot(&VmConfig {
            guest_cid,
            ..VmConfig::default()
        }) {
            Err(VmError::Config(_)) => {}
            Err(other) => panic!("guest CID {guest_cid}: expected VmError::Config, got {other:?}"),
            Ok(_) => panic!("guest CID {guest_cid} was accepted; it must be refused"),
        }
    }
}

#[test]
fn host_stops_a_parked_vcpu() {
    let vm = boot_default();
    connect(&vm).ping().expect("VM did not answer");
    let start = Instant::now();
    assert_eq!(vm.stop(), VmExit::Stopped, "stopping an idle VM");
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "stop() of an idle VM took {:?}",
        start.elapsed()
    );
    assert_eq!(vm.exit(), Some(VmExit::Stopped), "exit() after stop()");
}

#[test]
fn stop_from_another_thread_unblocks_a_waiting_reader() {
    let vm = boot_default();
    let mut client = connect(&vm);
    client.ping().expect("VM did not answer");
    assert_eq!(
        vm.wait(Duration::from_millis(50)),
        None,
        "wait() on a running VM should time out with None"
    );
    std::thread::scope(|s| {
        // Nothing was requested, so this receive blocks until the VM goes away.
        let reader = s.spawn(move || client.receive());
        std::thread::sleep(Duration::from_millis(100));
        assert!(
            !reader.is_finished(),
            "receive() returned with no request outstanding"
        );
        let start = Instant::now();
        assert_eq!(vm.stop(), VmExit::Stopped, "stop() from another thread");
        let result = reader.join().expect("the reader thread panicked");
        match result {
            Err(ClientError::Io(_)) => {}
            other => {
                panic!("a reader blocked on a stopped VM should get an I/O error, got {other:?}")
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "the blocked reader took {:?} to notice the stop",
            start.elapsed()
        );
    });
    assert!(
        vm.connect(ember_wire::layout::GUEST_FRAME_PORT, TIMEOUT)
            .is_err(),
        "connecting to a stopped VM must fail"
    );
}
