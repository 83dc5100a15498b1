//! The hybrid vsock Unix socket (`VmConfig::uds_path`) works from a plain `UnixStream`,
//! with no code from this crate on the client side except the frame client.

mod common;

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use common::{assert_same_bytes, boot, handshake, handshake_line, patterned, unique_socket_path};
use ember_vmm::{GuestClient, Vm, VmConfig};
use ember_wire::layout::GUEST_FRAME_PORT;

fn boot_with_socket(path: &Path) -> Vm {
    assert!(!path.exists(), "stale socket file {path:?}");
    let vm = boot(&VmConfig {
        uds_path: Some(path.to_path_buf()),
        ..VmConfig::default()
    });
    assert!(
        path.exists(),
        "the VM booted but its socket {path:?} does not exist"
    );
    vm
}

#[test]
fn frames_flow_over_the_hybrid_socket() {
    let path = unique_socket_path("frames");
    let vm = boot_with_socket(&path);

    let (stream, reply) = handshake(&path, GUEST_FRAME_PORT);
    let host_port = reply
        .strip_prefix("OK ")
        .and_then(|p| p.parse::<u32>().ok())
        .unwrap_or_else(|| panic!("expected `OK <host port>`, got {reply:?}"));
    assert!(
        host_port >= 1024,
        "host port {host_port} is in the reserved range"
    );

    let mut client = GuestClient::new(stream);
    client.ping().expect("ping over the hybrid socket failed");
    for (seed, len) in [0usize, 1, 4096, 300_000].into_iter().enumerate() {
        let sent = patterned(len, seed as u32);
        let got = client
            .echo(&sent)
            .unwrap_or_else(|e| panic!("echo of {len} bytes over the hybrid socket failed: {e}"));
        assert_same_bytes(
            &got,
            &sent,
            &format!("echo of {len} bytes over the hybrid socket"),
        );
    }
    let info = client.info().expect("info over the hybrid socket failed");
    assert_eq!(
        info.cpl, 3,
        "guest reports CPL {} over the hybrid socket",
        info.cpl
    );

    // A second client at the same time gets its own connection.
    let (stream2, reply2) = handshake(&path, GUEST_FRAME_PORT);
    assert!(reply2.starts_with("OK "), "second CONNECT got {reply2:?}");
    assert_ne!(
        reply2, reply,
        "two connections were given the same host port"
    );
    let mut client2 = GuestClient::new(stream2);
    client2
        .ping()
        .expect("ping on the second hybrid connection failed");
    client
        .ping()
        .expect("first hybrid connection broke when a second one opened");

    drop(vm);
    assert!(
        !path.exists(),
        "socket file {path:?} still exists after the VM was dropped"
    );
    assert!(
        client.ping().is_err(),
        "a hybrid connection to a dropped VM must fail, not hang or succeed"
    );
}

#[test]
fn connect_to_a_port_without_listener_is_an_error() {
    let path = unique_socket_path("refused");
    let vm = boot_with_socket(&path);

    let (_stream, reply) = handshake(&path, 9999);
    assert!(
        reply.starts_with("ERROR"),
        "CONNECT to a port nobody listens on should answer `ERROR ...`, got {reply:?}"
    );

    let (_stream, reply) = handshake_line(&path, b"HELLO\n");
    assert!(
        reply.starts_with("ERROR"),
        "a line that is not `CONNECT <port>` should answer `ERROR ...`, got {reply:?}"
    );

    // The refusals did not break the listener or the VM.
    let (stream, reply) = handshake(&path, GUEST_FRAME_PORT);
    assert!(
        reply.starts_with("OK "),
        "CONNECT after refusals got {reply:?}"
    );
    GuestClient::new(stream)
        .ping()
        .expect("ping over the hybrid socket after refusals failed");
    assert_eq!(vm.exit(), None, "the VM ended: {:?}", vm.exit());

    drop(vm);
    assert!(
        !path.exists(),
        "socket file {path:?} still exists after the VM was dropped"
    );
}

#[test]
fn the_socket_is_closed_after_an_error_reply() {
    let path = unique_socket_path("closed");
    let _vm = boot_with_socket(&path);
    for line in [&b"CONNECT 9999\n"[..], b"HELLO\n"] {
        let shown = String::from_utf8_lossy(line).trim_end().to_string();
        let (mut stream, reply) = handshake_line(&path, line);
        assert!(reply.starts_with("ERROR"), "{shown:?} got {reply:?}");
        // After an ERROR there is nothing more to say: the client should see end-of-file.
        stream
            .set_read_timeout(Some(Duration::from_secs(2)))
            .expect("setting a read timeout");
        let mut rest = Vec::new();
        match stream.read_to_end(&mut rest) {
            Ok(_) => assert!(rest.is_empty(), "{shown:?}: bytes after ERROR: {rest:?}"),
            Err(e) => panic!(
                "{shown:?}: the socket was not closed within 2 s of the ERROR reply \
                 (read failed with: {e}); a client waiting for end-of-file hangs"
            ),
        }
    }
}
