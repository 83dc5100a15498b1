//! A VM boots, answers pings, echoes payloads from empty to the 6 MiB maximum, reports
//! itself correctly and powers off cleanly; guest memory sizes are validated.

mod common;

use std::time::Duration;

use common::{assert_same_bytes, boot, boot_default, connect, patterned, TIMEOUT};
use ember_wire::frame::MAX_PAYLOAD;
use host_vmm::{VmConfig, VmError, VmExit};

#[test]
fn ping_echo_info_and_shutdown() {
    let vm = boot_default();
    let mut client = connect(&vm);

    for i in 0..10 {
        client
            .ping()
            .unwrap_or_else(|e| panic!("ping #{i} failed: {e}; VM exit: {:?}", vm.exit()));
    }

    let empty = client.echo(&[]).expect("echo of an empty payload failed");
    assert!(
        empty.is_empty(),
        "echo of an empty payload returned {} bytes",
        empty.len()
    );

    for (seed, len) in [1usize, 7, 4096, 4097, 65_536, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let sent = patterned(len, seed as u32);
        let got = client
            .echo(&sent)
            .unwrap_or_else(|e| panic!("echo of {len} bytes failed: {e}"));
        assert_same_bytes(&got, &sent, &format!("echo of {len} bytes"));
    }

    assert_eq!(
        MAX_PAYLOAD,
        6 * 1024 * 1024,
        "the frame limit is documented as 6 MiB"
    );
    let big = patterned(MAX_PAYLOAD, 99);
    assert!(
        big.iter().any(|&b| b != 0),
        "the big payload must not be all zeros"
    );
    for round in 0..2 {
        let got = client
            .echo(&big)
            .unwrap_or_else(|e| panic!("6 MiB echo (round {round}) failed: {e}"));
        assert_same_bytes(&got, &big, &format!("6 MiB echo (round {round})"));
    }
    client
        .ping()
        .expect("ping after the 6 MiB echoes failed: the stream lost its frame boundaries");

    let info = client.info().expect("info request failed");
    assert_eq!(
        info.cpl, 3,
        "guest-init must run in ring 3, reports CPL {}",
        info.cpl
    );
    assert_eq!(
        info.mem_size,
        16 << 20,
        "default VM should have 16 MiB of RAM, guest reports {} bytes",
        info.mem_size
    );
    assert!(
        info.heap_size > 0 && info.heap_size < info.mem_size,
        "implausible heap size {} for {} bytes of RAM",
        info.heap_size,
        info.mem_size
    );
    assert!(!info.version.is_empty(), "guest reported an empty version");

    assert_eq!(vm.exit(), None, "VM ended before shutdown was requested");
    client.shutdown().expect("shutdown was not acknowledged");
    assert_eq!(
        vm.wait(TIMEOUT),
        Some(VmExit::PoweredOff(0)),
        "after an acknowledged shutdown the VM should power off with code 0; log: {:?}",
        vm.guest_log()
    );
}

#[test]
fn supported_memory_sizes_boot_and_are_reported() {
    for mem_mib in [4u32, 64] {
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
    // 2: below the 4 MiB minimum; 3 and 5: not multiples of 2 MiB (3 is also too small);
    // 4096: above the MMIO window at 3.25 GiB.
    for mem_mib in [0u32, 2, 3, 5, 4096] {
        let result = host_vmm::Vm::boot(&VmConfig {
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
        match host_vmm::Vm::boot(&VmConfig {
            guest_cid,
            ..VmConfig::default()
        }) {
            Err(VmError::Config(_)) => {}
            Err(other) => panic!("guest CID {guest_cid}: expected VmError::Config, got {other:?}"),
            Ok(_) => panic!("guest CID {guest_cid} was accepted; it must be refused"),
        }
    }
}
