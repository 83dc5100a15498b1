//! A VM boots, answers pings, echoes payloads from empty to the 6 MiB maximum, reports
//! itself correctly and powers off cleanly.

mod common;

use common::{assert_same_bytes, boot_default, connect, patterned, TIMEOUT};
use ember_vmm::VmExit;
use ember_wire::function::PAYLOAD_MAX;

#[test]
fn ping_and_echo_round_trips() {
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

    // Around the guest's coalescing limit (4 KiB), one vsock packet (64 KiB) and more.
    for (seed, len) in [1usize, 7, 4096, 4097, 65_536, 65_537, 1 << 20]
        .into_iter()
        .enumerate()
    {
        let sent = patterned(len, seed as u32);
        let got = client
            .echo(&sent)
            .unwrap_or_else(|e| panic!("echo of {len} bytes failed: {e}"));
        assert_same_bytes(&got, &sent, &format!("echo of {len} bytes"));
    }
    client.ping().expect("ping after the echoes failed");
}

#[test]
fn echo_of_the_maximum_payload() {
    let vm = boot_default();
    let mut client = connect(&vm);
    assert_eq!(
        PAYLOAD_MAX,
        6 * 1024 * 1024,
        "the payload limit is documented as 6 MiB"
    );
    let big = patterned(PAYLOAD_MAX, 99);
    assert!(
        big.iter().any(|&b| b != 0),
        "the big payload must not be all zeros"
    );
    // Twice on one connection: the second exchange starts with credit and buffers in the
    // state the first one left them in.
    for round in 0..2 {
        let got = client.echo(&big).unwrap_or_else(|e| {
            panic!(
                "6 MiB echo (round {round}) failed: {e}; VM exit: {:?}",
                vm.exit()
            )
        });
        assert_same_bytes(&got, &big, &format!("6 MiB echo (round {round})"));
    }
    client
        .ping()
        .expect("ping after the 6 MiB echoes failed: the stream lost its frame boundaries");
}

#[test]
fn info_then_shutdown_powers_off_with_code_0() {
    let vm = boot_default();
    let mut client = connect(&vm);
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
    assert!(
        client.ping().is_err(),
        "a ping to a powered-off VM must fail, not hang or succeed"
    );
    assert_eq!(
        vm.stop(),
        VmExit::PoweredOff(0),
        "stop() after power-off should report how the VM ended"
    );
}
