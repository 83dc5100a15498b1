//! Helpers for the function-pool tests (`functions_*.rs`). Every test that invokes a function
//! needs real KVM: [`pool`] checks `/dev/kvm` first and panics with a clear message, so a
//! machine without KVM fails these tests instead of skipping them.

// Each test binary compiles this module on its own and uses only part of it.
#![allow(dead_code)]

use std::fs::OpenOptions;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_vmm::function::{
    Failure, FunctionSpec, Invocation, LogSink, Pool, PoolConfig, SpecBuilder,
};

/// Panics unless `/dev/kvm` can be opened for reading and writing.
pub fn require_kvm() {
    if let Err(e) = OpenOptions::new().read(true).write(true).open("/dev/kvm") {
        panic!(
            "these tests need KVM: opening /dev/kvm read-write failed: {e} \
             (/dev/kvm must exist and be readable and writable by this user)"
        );
    }
}

/// Every log chunk a pool's sink received, with the function it came from.
#[derive(Default)]
pub struct Logs {
    chunks: Mutex<Vec<(String, String, Vec<u8>)>>,
}

impl Logs {
    pub fn sink(self: &Arc<Self>) -> LogSink {
        let logs = self.clone();
        Arc::new(move |spec: &FunctionSpec, chunk: &[u8]| {
            logs.chunks.lock().unwrap().push((
                spec.name.clone(),
                spec.version.clone(),
                chunk.to_vec(),
            ));
        })
    }

    /// Everything function `name` logged so far, chunks concatenated.
    pub fn of(&self, name: &str) -> Vec<u8> {
        self.chunks
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == name)
            .flat_map(|(_, _, c)| c.iter().copied())
            .collect()
    }

    /// Number of chunks function `name` logged so far.
    pub fn chunks_of(&self, name: &str) -> usize {
        self.chunks
            .lock()
            .unwrap()
            .iter()
            .filter(|(n, _, _)| n == name)
            .count()
    }
}

/// A pool with `config` and a recording log sink.
pub fn pool_with(config: PoolConfig) -> (Pool, Arc<Logs>) {
    require_kvm();
    let logs = Arc::new(Logs::default());
    (Pool::new(config, logs.sink()), logs)
}

/// A pool with the default configuration and a recording log sink.
pub fn pool() -> (Pool, Arc<Logs>) {
    pool_with(PoolConfig::default())
}

/// Builds a spec or fails the test with the reason.
pub fn build(builder: SpecBuilder, module: &[u8]) -> Arc<FunctionSpec> {
    let what = format!("{builder:?}");
    builder
        .build(module)
        .unwrap_or_else(|e| panic!("building {what} failed: {e}"))
}

/// A spec with default settings and the given name.
pub fn spec(name: &str, module: &[u8]) -> Arc<FunctionSpec> {
    build(
        SpecBuilder {
            name: name.into(),
            ..SpecBuilder::default()
        },
        module,
    )
}

pub fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Shortens long text for assertion messages.
pub fn clip(text: &str) -> String {
    if text.len() <= 300 {
        return text.to_string();
    }
    let mut end = 300;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// Invokes `spec` and fails the test, with the error and log tail, unless it succeeded.
pub fn invoke_ok(pool: &Pool, spec: &Arc<FunctionSpec>, payload: &[u8]) -> Invocation {
    let inv = pool.invoke(spec, payload);
    if let Some(e) = &inv.error {
        panic!(
            "invoking {}:{} failed: {e} ({e:?}); log tail: {:?}; output: {:?}",
            spec.name,
            spec.version,
            clip(&lossy(&inv.log_tail)),
            clip(&lossy(&inv.output))
        );
    }
    inv
}

/// Invokes `spec`, expecting a failure; returns the invocation.
pub fn invoke_err(pool: &Pool, spec: &Arc<FunctionSpec>, payload: &[u8]) -> (Invocation, Failure) {
    let inv = pool.invoke(spec, payload);
    match inv.error.clone() {
        Some(e) => (inv, e),
        None => panic!(
            "invoking {}:{} succeeded with {:?}; a failure was expected",
            spec.name,
            spec.version,
            clip(&lossy(&inv.output))
        ),
    }
}

/// Parses a response as JSON, failing the test with the raw bytes otherwise.
pub fn json(output: &[u8]) -> serde_json::Value {
    serde_json::from_slice(output)
        .unwrap_or_else(|e| panic!("response {:?} is not JSON: {e}", clip(&lossy(output))))
}

/// The `count` of a counter response.
pub fn count(inv: &Invocation) -> u64 {
    json(&inv.output)["count"]
        .as_u64()
        .unwrap_or_else(|| panic!("counter response {:?} has no count", lossy(&inv.output)))
}

/// Polls `condition` every 5 ms until it holds or `limit` passes; returns how long it took.
pub fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Some(start.elapsed());
        }
        if start.elapsed() >= limit {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

// Process counters and byte helpers are shared with the micro-VM tests; each test binary
// uses only some of them.
#[path = "../common/mod.rs"]
mod common;
#[allow(unused_imports)]
pub use common::{assert_same_bytes, open_fds, patterned, threads};

/// Hand-assembled WebAssembly modules (no `wat` crate in host-vmm's dependencies).
pub mod wasm {
    fn leb(mut n: u32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    fn name(s: &str, out: &mut Vec<u8>) {
        leb(s.len() as u32, out);
        out.extend_from_slice(s.as_bytes());
    }

    fn section(id: u8, body: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(body.len() as u32, out);
        out.extend_from_slice(body);
    }

    /// Signed LEB128, for `i32.const` immediates.
    pub fn sleb(mut n: i32, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if (n == 0 && byte & 0x40 == 0) || (n == -1 && byte & 0x40 != 0) {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A module with type 0 = `() -> ()`, type 1 = `(i32) -> ()`, type 2 =
    /// `(i32, i32, i32, i32) -> i32` and type 3 = `(i32, i32) -> i32`, the given function imports (module, name, type), one
    /// memory exported as `memory`, and one function of type 0 with `body` (instructions,
    /// without the final `end`) exported under every name in `exports`.
    pub fn module(imports: &[(&str, &str, u32)], exports: &[&str], body: &[u8]) -> Vec<u8> {
        module_with_memory(imports, exports, body, 1)
    }

    /// [`module`] with `pages` 64 KiB pages of memory.
    pub fn module_with_memory(
        imports: &[(&str, &str, u32)],
        exports: &[&str],
        body: &[u8],
        pages: u32,
    ) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        section(
            1,
            &[
                4, 0x60, 0, 0, 0x60, 1, 0x7f, 0, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7f, 1, 0x7f, 0x60, 2,
                0x7f, 0x7f, 1, 0x7f,
            ],
            &mut m,
        );
        if !imports.is_empty() {
            let mut s = Vec::new();
            leb(imports.len() as u32, &mut s);
            for (module, field, ty) in imports {
                name(module, &mut s);
                name(field, &mut s);
                s.push(0); // a function
                leb(*ty, &mut s);
            }
            section(2, &s, &mut m);
        }
        section(3, &[1, 0], &mut m); // one function, type 0
        let mut s = vec![1, 0]; // one memory, minimum only
        leb(pages, &mut s);
        section(5, &s, &mut m);
        let func = imports.len() as u32;
        let mut s = Vec::new();
        leb(exports.len() as u32 + 1, &mut s);
        name("memory", &mut s);
        s.extend_from_slice(&[2, 0]);
        for export in exports {
            name(export, &mut s);
            s.push(0);
            leb(func, &mut s);
        }
        section(7, &s, &mut m);
        let mut code = vec![0]; // no locals
        code.extend_from_slice(body);
        code.push(0x0b);
        let mut s = vec![1];
        leb(code.len() as u32, &mut s);
        s.extend_from_slice(&code);
        section(10, &s, &mut m);
        m
    }

    /// A reactor whose `handle` writes `len` bytes (zeros) of memory to stdout in one
    /// `fd_write`.
    pub fn writer_reactor(len: u32) -> Vec<u8> {
        let pages = len.div_ceil(65536) + 1;
        let mut body = Vec::new();
        // The iovec at 0: { ptr 16, len }.
        body.extend_from_slice(&[0x41, 0, 0x41, 16, 0x36, 2, 0]); // i32.store (0) = 16
        body.extend_from_slice(&[0x41, 4, 0x41]);
        sleb(len as i32, &mut body);
        body.extend_from_slice(&[0x36, 2, 0]); // i32.store (4) = len
                                               // fd_write(1, iovs 0, 1 iovec, nwritten at 8); drop the errno.
        body.extend_from_slice(&[0x41, 1, 0x41, 0, 0x41, 1, 0x41, 8, 0x10, 0, 0x1a]);
        module_with_memory(
            &[("wasi_snapshot_preview1", "fd_write", 2)],
            &["handle"],
            &body,
            pages,
        )
    }

    /// A reactor whose `_initialize` (also exported as `handle`) writes `word` to stderr and
    /// then traps.
    pub fn logging_init_trap(word: [u8; 4]) -> Vec<u8> {
        let mut body = vec![0x41, 16, 0x41];
        sleb(i32::from_le_bytes(word), &mut body);
        body.extend_from_slice(&[0x36, 2, 0]); // i32.store (16) = word
        body.extend_from_slice(&[0x41, 0, 0x41, 16, 0x36, 2, 0]); // iovec ptr = 16
        body.extend_from_slice(&[0x41, 4, 0x41, 4, 0x36, 2, 0]); // iovec len = 4
                                                                 // fd_write(2, iovs 0, 1 iovec, nwritten at 8); drop the errno; unreachable.
        body.extend_from_slice(&[0x41, 2, 0x41, 0, 0x41, 1, 0x41, 8, 0x10, 0, 0x1a, 0x00]);
        module(
            &[("wasi_snapshot_preview1", "fd_write", 2)],
            &["_initialize", "handle"],
            &body,
        )
    }

    /// A reactor whose `handle` responds with 32 bytes from `random_get`.
    pub fn random_reactor() -> Vec<u8> {
        let body = [
            0x41, 16, 0x41, 32, 0x10, 0, 0x1a, // random_get(16, 32); drop
            0x41, 0, 0x41, 16, 0x36, 2, 0, // iovec ptr = 16
            0x41, 4, 0x41, 32, 0x36, 2, 0, // iovec len = 32
            0x41, 1, 0x41, 0, 0x41, 1, 0x41, 8, 0x10, 1, 0x1a, // fd_write(1, 0, 1, 8); drop
        ];
        module(
            &[
                ("wasi_snapshot_preview1", "random_get", 3),
                ("wasi_snapshot_preview1", "fd_write", 2),
            ],
            &["handle"],
            &body,
        )
    }

    /// A command whose `_start` calls `proc_exit(code)`.
    pub fn exiting_command(code: u8) -> Vec<u8> {
        assert!(code < 64, "one-byte signed LEB128 only");
        module(
            &[("wasi_snapshot_preview1", "proc_exit", 1)],
            &["_start"],
            // i32.const code; call 0
            &[0x41, code, 0x10, 0],
        )
    }
}
