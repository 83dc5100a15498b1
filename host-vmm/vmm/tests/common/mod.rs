//! Helpers shared by the integration tests. Every test here needs real KVM: booting
//! panics with a clear message when `/dev/kvm` is missing or inaccessible, so a machine
//! without KVM fails the suite instead of skipping it.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::fmt::Debug;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use ember_vmm::{ClientError, GuestClient, Vm, VmConfig};

/// Generous bound for connecting, replies and VM exits; nothing should come close to it.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// Boots a VM or fails the test, naming the likely cause.
pub fn boot(config: &VmConfig) -> Vm {
    Vm::boot(config).unwrap_or_else(|e| {
        panic!(
            "Vm::boot({config:?}) failed: {e}\n\
             (these tests need KVM: /dev/kvm must exist and be readable and writable)"
        )
    })
}

/// A default VM (16 MiB, CID 3, no test frames).
pub fn boot_default() -> Vm {
    boot(&VmConfig::default())
}

/// A VM that accepts the test-only frames (deliberate faults and hangs).
pub fn boot_with_test_frames() -> Vm {
    boot(&VmConfig {
        test_frames: true,
        ..VmConfig::default()
    })
}

/// Connects to guest-init's frame port, failing the test with the VM's state on error.
pub fn connect(vm: &Vm) -> GuestClient {
    GuestClient::connect(vm, TIMEOUT).unwrap_or_else(|e| {
        panic!(
            "connecting to guest-init failed: {e}; VM exit: {:?}; guest log: {:?}",
            vm.exit(),
            vm.guest_log()
        )
    })
}

/// `len` bytes of a pattern that depends on `seed`, has no long runs and is never all zeros.
pub fn patterned(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(0x9e37_79b9) | 1;
    (0..len)
        .map(|_| {
            // xorshift32
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

/// Asserts that an echo came back unchanged, without printing megabytes on failure.
pub fn assert_same_bytes(got: &[u8], sent: &[u8], what: &str) {
    assert_eq!(
        got.len(),
        sent.len(),
        "{what}: reply has {} bytes, request had {}",
        got.len(),
        sent.len()
    );
    if let Some(at) = got.iter().zip(sent).position(|(a, b)| a != b) {
        panic!(
            "{what}: reply differs from the request first at byte {at} (got {:#04x}, sent {:#04x})",
            got[at], sent[at]
        );
    }
}

/// Unwraps a result that must be an error frame from the guest with `code`.
pub fn expect_guest_error<T: Debug>(result: Result<T, ClientError>, code: u16, what: &str) {
    match result {
        Err(ClientError::Guest { code: got, message }) => assert_eq!(
            got, code,
            "{what}: guest answered with error code {got} ({message:?}), expected {code}"
        ),
        other => panic!("{what}: expected an error frame with code {code}, got {other:?}"),
    }
}

/// A fresh Unix socket path in the temp dir, unique per process and call.
pub fn unique_socket_path(tag: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ember-test-{}-{tag}-{n}.sock", std::process::id()))
}

/// Hybrid socket: reads one `\n`-terminated line byte by byte, so nothing after it is consumed.
pub fn read_line(stream: &mut UnixStream) -> String {
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    while line.len() < 256 {
        match stream.read(&mut byte) {
            Ok(0) => panic!(
                "the socket closed after {:?} without finishing the handshake line",
                String::from_utf8_lossy(&line)
            ),
            Ok(_) if byte[0] == b'\n' => return String::from_utf8_lossy(&line).into_owned(),
            Ok(_) => line.push(byte[0]),
            Err(e) => panic!(
                "reading the handshake reply failed after {:?}: {e}",
                String::from_utf8_lossy(&line)
            ),
        }
    }
    panic!(
        "the handshake reply {:?}... is longer than any valid reply",
        String::from_utf8_lossy(&line)
    );
}

/// Connects to the socket and sends `line`; returns the stream and the reply line.
pub fn handshake_line(path: &Path, line: &[u8]) -> (UnixStream, String) {
    let mut stream =
        UnixStream::connect(path).unwrap_or_else(|e| panic!("connecting to {path:?}: {e}"));
    stream
        .set_read_timeout(Some(TIMEOUT))
        .expect("setting a read timeout");
    stream.write_all(line).expect("writing the handshake line");
    let reply = read_line(&mut stream);
    (stream, reply)
}

/// Connects to the socket and sends `CONNECT <port>`; returns the stream and the reply line.
pub fn handshake(path: &Path, port: u32) -> (UnixStream, String) {
    handshake_line(path, format!("CONNECT {port}\n").as_bytes())
}

/// State and CPU time (utime + stime, in clock ticks) of one thread of this process.
#[derive(Clone, Copy, Debug)]
pub struct ThreadStat {
    pub state: char,
    pub ticks: u64,
}

pub fn thread_stat(tid: i32) -> ThreadStat {
    let path = format!("/proc/self/task/{tid}/stat");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
    // The command name (field 2) is in parentheses and may contain spaces: parse after it.
    let rest = &text[text
        .rfind(')')
        .unwrap_or_else(|| panic!("{path}: no ')' in {text:?}"))
        + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> u64 {
        // `fields[0]` is field 3 (state); utime and stime are fields 14 and 15.
        let raw = fields
            .get(n - 3)
            .unwrap_or_else(|| panic!("{path}: no field {n}"));
        raw.parse()
            .unwrap_or_else(|e| panic!("{path}: field {n} is {raw:?}: {e}"))
    };
    ThreadStat {
        state: fields[0].chars().next().expect("empty state field"),
        ticks: field(14) + field(15),
    }
}

/// The vCPU thread's id, failing the test if the VM does not report one.
pub fn vcpu_tid(vm: &Vm) -> i32 {
    // The vCPU thread stores its tid as its first action; allow it a moment to do so.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        if let Some(tid) = vm.vcpu_tid() {
            return tid;
        }
        assert!(
            Instant::now() < deadline,
            "the VM never reported its vCPU thread id"
        );
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// Polls `condition` for up to a second; true as soon as it holds.
pub fn eventually(mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        if condition() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .expect("listing /proc/self/fd")
        .count()
}

/// Threads of this process.
pub fn threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .expect("listing /proc/self/task")
        .count()
}

/// Resident set size of this process in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("reading /proc/self/statm");
    let resident: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("unexpected /proc/self/statm: {statm:?}"));
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    resident * u64::try_from(page).expect("page size")
}
