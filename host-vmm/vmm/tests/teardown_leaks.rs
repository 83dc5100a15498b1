//! Booting and tearing down many VMs (some serving the hybrid socket) leaks no file
//! descriptors, threads or memory.
//!
//! The only test in its own binary (process), so no other test's VMs, threads or fds
//! disturb the counts.

mod common;

use std::time::Instant;

use common::{
    boot, connect, eventually, handshake, open_fds, rss_bytes, threads, unique_socket_path,
};
use ember_vmm::{GuestClient, VmConfig};
use ember_wire::layout::GUEST_FRAME_PORT;

const WARM_UP: usize = 10;
const ROUNDS: usize = 200;
/// Allocator caches and arenas may settle a little higher; a leak of one 16 MiB guest per
/// VM (or anything per VM) would be far above this.
const RSS_TOLERANCE: u64 = 16 << 20;

/// Every this many rounds the VM also serves the hybrid socket, used by one client.
const HYBRID_EVERY: usize = 10;

fn boot_ping_teardown(round: usize) {
    let hybrid = round.is_multiple_of(HYBRID_EVERY);
    let path = unique_socket_path("leaks");
    let vm = boot(&VmConfig {
        uds_path: hybrid.then(|| path.clone()),
        ..VmConfig::default()
    });
    let mut client = connect(&vm);
    client
        .ping()
        .unwrap_or_else(|e| panic!("ping to VM #{round} failed: {e}; exit: {:?}", vm.exit()));
    if hybrid {
        let (stream, reply) = handshake(&path, GUEST_FRAME_PORT);
        assert!(
            reply.starts_with("OK "),
            "VM #{round}: CONNECT got {reply:?}"
        );
        GuestClient::new(stream)
            .ping()
            .unwrap_or_else(|e| panic!("VM #{round}: ping over the hybrid socket failed: {e}"));
    }
    drop(client);
    drop(vm);
    assert!(!path.exists(), "VM #{round}: socket {path:?} left behind");
}

#[test]
fn boot_and_teardown_leaks_nothing() {
    for round in 0..WARM_UP {
        boot_ping_teardown(round);
    }
    let fds = open_fds();
    let thread_count = threads();
    let rss = rss_bytes();

    let start = Instant::now();
    for round in 0..ROUNDS {
        boot_ping_teardown(round);
    }
    let elapsed = start.elapsed();

    // A joined thread can linger in /proc for a moment after join() returns.
    assert!(
        eventually(|| threads() == thread_count),
        "thread count grew from {thread_count} to {} over {ROUNDS} VMs",
        threads()
    );
    assert_eq!(
        open_fds(),
        fds,
        "open file descriptors went from {fds} to {} over {ROUNDS} VMs",
        open_fds()
    );
    let rss_after = rss_bytes();
    assert!(
        rss_after < rss + RSS_TOLERANCE,
        "RSS grew by {} KiB over {ROUNDS} VMs (from {} KiB to {} KiB; tolerance {} KiB)",
        rss_after.saturating_sub(rss) >> 10,
        rss >> 10,
        rss_after >> 10,
        RSS_TOLERANCE >> 10
    );
    eprintln!(
        "{ROUNDS} VMs in {elapsed:?}; fds {fds}, threads {thread_count}, RSS {} -> {} KiB",
        rss >> 10,
        rss_after >> 10
    );
}
