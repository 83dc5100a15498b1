//! ember's sample functions as WebAssembly bytes, ready to hand to a runtime in tests and
//! benchmarks.
//!
//! The Rust functions live in their own workspace, `examples/functions/`, and `build.rs`
//! builds them for `wasm32-wasip1` on every `cargo build`; the WAT fixtures in `examples/wat/`
//! cover the cases that are clearer by hand. See `examples/README.md` for the function
//! contract.
//!
//! | module | kind | what it does |
//! |---|---|---|
//! | [`ECHO`] | command | copies stdin to stdout |
//! | [`HELLO`] | reactor | `{"name":"Ada"}` → `{"message":"Hello, Ada!"}` (default "world"), one log line |
//! | [`JSON_TRANSFORM`] | reactor | `{"items":[{"name","price","qty"}…]}` → `{"count","total","names"}`; bad input exits 1 |
//! | [`COUNTER`] | reactor | `{"count":n}`, n = invocations of this instance so far |
//! | [`SHA_HEAVY`] | reactor | `{"mib":N}` → `{"mib":N,"sha256":…}` of [`digest_pattern`]`(N)` |
//! | [`OOM`] | reactor | allocates until memory runs out, then traps |
//! | [`ENV_READER`] | reactor | all environment variables as a JSON object, sorted by key |
//! | [`ECHO_REACTOR`] | reactor (WAT) | copies stdin to stdout; the benchmarks' echo |
//! | [`TRAP`] | reactor (WAT) | `handle` traps at once |
//! | [`LOOP`] | reactor (WAT) | `handle` never returns |
//! | [`INIT_TRAP`] | reactor (WAT) | `_initialize` traps |

/// The CPU-bound workload of [`SHA_HEAVY`], run natively: SHA-256 of `mib` MiB of the pattern
/// `byte i = (i * 31 + 7) as u8`, as lowercase hex.
pub use sha_pattern::digest_pattern;

macro_rules! module {
    ($file:literal) => {
        include_bytes!(concat!(env!("OUT_DIR"), "/", $file))
    };
}

/// Command: copies the event (stdin) to the response (stdout) unchanged.
pub const ECHO: &[u8] = module!("echo.wasm");
/// Reactor: greets the event's `name` and logs one line to stderr.
pub const HELLO: &[u8] = module!("hello.wasm");
/// Reactor: totals priced items with serde; invalid input exits with code 1.
pub const JSON_TRANSFORM: &[u8] = module!("json_transform.wasm");
/// Reactor: counts the invocations of its instance (state persists between them).
pub const COUNTER: &[u8] = module!("counter.wasm");
/// Reactor: SHA-256 over `mib` MiB of a fixed pattern; the same result as [`digest_pattern`].
pub const SHA_HEAVY: &[u8] = module!("sha_heavy.wasm");
/// Reactor: allocates 1 MiB blocks until allocation fails, then traps; never returns.
pub const OOM: &[u8] = module!("oom.wasm");
/// Reactor: responds with its environment variables as a JSON object sorted by key.
pub const ENV_READER: &[u8] = module!("env_reader.wasm");
/// Reactor (WAT): copies the event to the response; small enough to measure the platform.
pub const ECHO_REACTOR: &[u8] = module!("echo-reactor.wasm");
/// Reactor (WAT): `handle` executes `unreachable`.
pub const TRAP: &[u8] = module!("trap.wasm");
/// Reactor (WAT): `handle` loops forever.
pub const LOOP: &[u8] = module!("loop.wasm");
/// Reactor (WAT): `_initialize` executes `unreachable`.
pub const INIT_TRAP: &[u8] = module!("init-trap.wasm");

/// Every module by name (a function's name, as in `examples/functions/`, or a fixture's).
pub fn all() -> &'static [(&'static str, &'static [u8])] {
    &[
        ("echo", ECHO),
        ("hello", HELLO),
        ("json-transform", JSON_TRANSFORM),
        ("counter", COUNTER),
        ("sha-heavy", SHA_HEAVY),
        ("oom", OOM),
        ("env-reader", ENV_READER),
        ("echo-reactor", ECHO_REACTOR),
        ("trap", TRAP),
        ("loop", LOOP),
        ("init-trap", INIT_TRAP),
    ]
}

/// The command modules (export `_start`); every other module in [`all`] is a reactor
/// (exports `_initialize` and `handle`).
pub const COMMANDS: &[&str] = &["echo"];

#[cfg(test)]
mod tests;
