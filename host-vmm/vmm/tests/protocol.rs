//! The frame protocol against a real guest: malformed headers, unknown kinds, disallowed
//! test frames, and several connections at once.

mod common;

use std::io::Write;

use common::{assert_same_bytes, boot_default, connect, expect_guest_error, patterned, TIMEOUT};
use ember_vmm::{ClientError, GuestClient, Vm};
use ember_wire::frame::{ErrorCode, Header, Kind, HEADER_LEN, MAX_PAYLOAD};
use ember_wire::function::PAYLOAD_MAX;

fn client_with_timeout(vm: &Vm) -> GuestClient {
    let mut client = connect(vm);
    client.stream_mut().set_read_timeout(Some(TIMEOUT));
    client
}

#[test]
fn malformed_header_gets_error_1_and_closes_the_connection() {
    let vm = boot_default();
    let mut bad_version = Header::encode(Kind::Ping as u8, 0);
    bad_version[0] = 2;
    let mut reserved = Header::encode(Kind::Ping as u8, 0);
    reserved[2] = 1;
    let mut reserved_high = Header::encode(Kind::Ping as u8, 0);
    reserved_high[3] = 0x80;
    let too_large = Header::encode(Kind::Echo as u8, MAX_PAYLOAD as u32 + 1);
    let mut http = [0u8; HEADER_LEN];
    http.copy_from_slice(&b"GET / HTTP/1.1\r\n"[..HEADER_LEN]);
    let cases: [(&str, [u8; HEADER_LEN]); 5] = [
        ("version 2", bad_version),
        ("reserved byte 2 set", reserved),
        ("reserved byte 3 set", reserved_high),
        ("length MAX_PAYLOAD + 1", too_large),
        ("an HTTP request", http),
    ];

    for (what, header) in cases {
        let mut client = client_with_timeout(&vm);
        client
            .ping()
            .unwrap_or_else(|e| panic!("{what}: ping before the bad header: {e}"));
        client
            .stream_mut()
            .write_all(&header)
            .unwrap_or_else(|e| panic!("{what}: writing the bad header: {e}"));
        expect_guest_error(
            client.receive(),
            ErrorCode::Malformed as u16,
            &format!("header with {what}"),
        );
        match client.receive() {
            Err(ClientError::Io(_)) => {}
            other => panic!(
                "{what}: after a malformed header the guest should close the connection \
                 (end-of-file or an I/O error), got {other:?}"
            ),
        }
        assert!(
            client.ping().is_err(),
            "{what}: a ping on the closed connection must fail"
        );
    }

    // Only those connections ended: the VM serves new ones.
    client_with_timeout(&vm)
        .ping()
        .expect("ping on a new connection after malformed headers failed");
    assert_eq!(
        vm.exit(),
        None,
        "malformed headers ended the VM: {:?}",
        vm.exit()
    );
}

#[test]
fn unknown_kinds_get_error_2_and_the_connection_stays_usable() {
    let vm = boot_default();
    let mut client = client_with_timeout(&vm);
    // 0x55 and 0 are no kind at all; Pong, EchoReply and Error are kinds but not requests.
    for kind in [
        0x55u8,
        0,
        0xff,
        Kind::Pong as u8,
        Kind::EchoReply as u8,
        Kind::Error as u8,
    ] {
        client
            .send(kind, b"payload")
            .unwrap_or_else(|e| panic!("sending kind {kind:#x}: {e}"));
        expect_guest_error(
            client.receive(),
            ErrorCode::UnknownKind as u16,
            &format!("frame of kind {kind:#x}"),
        );
        client
            .ping()
            .unwrap_or_else(|e| panic!("ping after a frame of kind {kind:#x} failed: {e}"));
    }
    let sent = patterned(10_000, 7);
    let got = client.echo(&sent).expect("echo after unknown kinds failed");
    assert_same_bytes(&got, &sent, "echo after unknown kinds");
}

#[test]
fn test_frames_are_refused_without_the_boot_flag() {
    let vm = boot_default();
    let mut client = client_with_timeout(&vm);
    for (what, kind, payload) in [
        ("TestFault [0]", Kind::TestFault, &[0u8][..]),
        ("TestFault [1]", Kind::TestFault, &[1u8][..]),
        ("TestSpin", Kind::TestSpin, &[][..]),
    ] {
        client
            .send(kind as u8, payload)
            .unwrap_or_else(|e| panic!("sending {what}: {e}"));
        expect_guest_error(client.receive(), ErrorCode::NotAllowed as u16, what);
        client
            .ping()
            .unwrap_or_else(|e| panic!("ping after a refused {what} failed: {e}"));
    }
    assert_eq!(
        vm.exit(),
        None,
        "a VM without test frames acted on one: {:?}",
        vm.exit()
    );
}

#[test]
fn concurrent_connections_each_echo_their_own_data() {
    const CONNECTIONS: u32 = 4;
    let vm = boot_default();
    std::thread::scope(|s| {
        let workers: Vec<_> = (0..CONNECTIONS)
            .map(|n| {
                let vm = &vm;
                s.spawn(move || {
                    let mut client = client_with_timeout(vm);
                    for (round, len) in [1usize, 1000, 70_000, 200_000, 3].into_iter().enumerate() {
                        let sent = patterned(len, n * 100 + round as u32);
                        let got = client.echo(&sent).unwrap_or_else(|e| {
                            panic!("connection {n}: echo of {len} bytes failed: {e}")
                        });
                        assert_same_bytes(
                            &got,
                            &sent,
                            &format!("connection {n}: echo of {len} bytes"),
                        );
                    }
                    client
                        .ping()
                        .unwrap_or_else(|e| panic!("connection {n}: final ping failed: {e}"));
                })
            })
            .collect();
        for worker in workers {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    assert_eq!(vm.exit(), None, "the VM ended: {:?}", vm.exit());
}

/// A 6 MiB echo on one connection while another pipelines 1 MiB echoes: the guest's RX
/// buffers fill up while it is still sending, and neither side may give up on that.
#[test]
fn large_echo_alongside_pipelined_traffic() {
    const PIPELINE: usize = 5;
    let vm = boot_default();
    std::thread::scope(|s| {
        let big = s.spawn(|| {
            let mut client = client_with_timeout(&vm);
            let sent = patterned(PAYLOAD_MAX, 11);
            for round in 0..5 {
                let got = client.echo(&sent).unwrap_or_else(|e| {
                    panic!("6 MiB echo, round {round}: {e}; VM exit: {:?}", vm.exit())
                });
                assert_same_bytes(&got, &sent, &format!("6 MiB echo, round {round}"));
            }
        });
        let pipelined = s.spawn(|| {
            let mut client = client_with_timeout(&vm);
            let sent = patterned(1 << 20, 12);
            for round in 0..10 {
                for _ in 0..PIPELINE {
                    client.send(Kind::Echo as u8, &sent).unwrap_or_else(|e| {
                        panic!("pipelined 1 MiB echo, round {round}: sending: {e}")
                    });
                }
                for i in 0..PIPELINE {
                    let reply = client.receive().unwrap_or_else(|e| {
                        panic!(
                            "pipelined 1 MiB echo, round {round}, reply {i}: {e}; VM exit: {:?}",
                            vm.exit()
                        )
                    });
                    assert_eq!(
                        reply.kind,
                        Kind::EchoReply as u8,
                        "pipelined echo, round {round}, reply {i}: wrong kind"
                    );
                    assert_same_bytes(
                        &reply.payload,
                        &sent,
                        &format!("pipelined 1 MiB echo, round {round}, reply {i}"),
                    );
                }
            }
        });
        for worker in [big, pipelined] {
            if let Err(panic) = worker.join() {
                std::panic::resume_unwind(panic);
            }
        }
    });
    assert_eq!(vm.exit(), None, "the VM ended: {:?}", vm.exit());
}
