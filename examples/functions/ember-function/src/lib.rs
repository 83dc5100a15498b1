//! The glue between an ember function and the platform, written once.
//!
//! An ember function is a `wasm32-wasip1` module: its event arrives on stdin, its response goes
//! to stdout, its logs go to stderr, and a non-zero exit code (or a trap) is a function error.
//! With this crate a function is a handler,
//!
//! ```ignore
//! fn handler(event: &[u8]) -> Result<Vec<u8>, E> // E: Display
//! ```
//!
//! and one macro line that makes a module of it:
//!
//! - [`reactor!`] in a `cdylib` crate: instantiated once per environment, `handle` runs the
//!   handler once per invocation, and memory persists between invocations.
//! - [`command!`] in a `bin` crate: instantiated afresh for every invocation, `main` runs the
//!   handler once.
//!
//! Either way [`run`] does the invocation: it reads the event, calls the handler, writes and
//! flushes the response, and turns an `Err` into a log line and exit code 1. With the `json`
//! feature, `ember_function::json` adapts a handler of serde types.

use std::fmt::Display;
use std::io::{self, Read, Write};
use std::process;

/// Makes this crate a reactor whose exported `handle` runs `handler` once per invocation.
///
/// Use it once, in a `cdylib` crate (`[lib] crate-type = ["cdylib"]`), with a handler that
/// [`run`] takes:
///
/// ```ignore
/// ember_function::reactor!(greet);
///
/// fn greet(event: &[u8]) -> Result<Vec<u8>, std::str::Utf8Error> {
///     Ok(format!("Hello, {}!", std::str::from_utf8(event)?).into_bytes())
/// }
/// ```
///
/// The runtime instantiates a reactor once per environment, calls `_initialize` once, then
/// calls the handler export once per invocation; statics keep their values in between. The
/// macro exports:
///
/// - `_initialize`, which runs the module's static constructors (see [`initialize`]);
/// - `handle`, the platform's default handler name, which calls [`run`] with the package
///   name as the log prefix. A function configured with another handler name writes
///   `reactor!(handler, export = name)` to export it as `name`.
#[macro_export]
macro_rules! reactor {
    ($handler:expr) => {
        $crate::reactor!($handler, export = handle);
    };
    ($handler:expr, export = $export:ident) => {
        /// The reactor's start function: the runtime calls it once, right after instantiation.
        #[unsafe(no_mangle)]
        pub extern "C" fn _initialize() {
            $crate::initialize()
        }

        /// One invocation: the event from stdin, the response to stdout.
        #[unsafe(no_mangle)]
        pub extern "C" fn $export() {
            $crate::run(::core::env!("CARGO_PKG_NAME"), $handler)
        }
    };
}

/// Makes this crate a command whose `main` runs `handler`.
///
/// Use it once, in a `bin` crate (`src/main.rs`), with a handler that [`run`] takes:
///
/// ```ignore
/// ember_function::command!(shout);
///
/// fn shout(event: &[u8]) -> Result<Vec<u8>, std::convert::Infallible> {
///     Ok(event.to_ascii_uppercase())
/// }
/// ```
///
/// The runtime instantiates a command afresh for every invocation and calls `_start` (Rust
/// provides it), which runs `main` once: nothing survives between invocations. `main` calls
/// [`run`] with the package name as the log prefix.
#[macro_export]
macro_rules! command {
    ($handler:expr) => {
        fn main() {
            $crate::run(::core::env!("CARGO_PKG_NAME"), $handler)
        }
    };
}

/// Runs one invocation of `handler`: reads the event from stdin to EOF, calls `handler` with
/// it, and writes the `Ok` response to stdout.
///
/// The response is flushed. Rust's stdout is line-buffered and a reactor's instance outlives
/// the invocation, so a response without a trailing newline would otherwise wait in the
/// buffer and come out at the front of the next invocation's response. Anything the handler
/// printed to stdout itself goes out with it, ahead of the returned bytes.
///
/// `Err(e)` is logged to stderr as `<name>: <e>` and ends the invocation with exit code 1,
/// which the platform records as a function error (discarding a reactor's environment, whose
/// state the failure may have left half-updated). Failing to read the event or to write the
/// response ends the same way, as `<name>: reading the event: …` or
/// `<name>: writing the response: …`. A panic is a trap (functions are built with
/// `panic = "abort"`): also a function error, logged by the panic message alone.
///
/// [`reactor!`] and [`command!`] call it with the package name as `name`.
pub fn run<E: Display>(name: &str, handler: impl FnOnce(&[u8]) -> Result<Vec<u8>, E>) {
    let mut event = Vec::new();
    if let Err(e) = io::stdin().read_to_end(&mut event) {
        fail(name, format_args!("reading the event: {e}"));
    }
    let response = handler(&event).unwrap_or_else(|e| fail(name, e));
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(&response).and_then(|()| out.flush()) {
        fail(name, format_args!("writing the response: {e}"));
    }
}

/// Logs `<name>: <error>` and ends the invocation as a function error.
fn fail(name: &str, error: impl Display) -> ! {
    eprintln!("{name}: {error}");
    process::exit(1)
}

/// Runs the module's static constructors: the body of the `_initialize` that [`reactor!`]
/// exports, not to be called otherwise.
///
/// A reactor's start function is `_initialize`, which Rust does not provide for a `cdylib`.
/// Besides running the constructors (wasi-libc's and any dependency's) once, referencing the
/// linker-synthesised `__wasm_call_ctors` stops the linker from treating the module as a
/// command: without it the linker wraps every export so that each call first runs the
/// constructors and then the destructors, per invocation instead of once, and a C
/// dependency's state would be re-initialised every time.
#[doc(hidden)]
pub fn initialize() {
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the linker-synthesised constructor list; the runtime calls `_initialize`, the
    // only caller, once.
    unsafe { __wasm_call_ctors() }
}

/// Adapts a handler of serde types to [`run`]'s bytes: the event is parsed from JSON into `T`
/// and the handler's `Ok` is serialized to JSON as the response.
///
/// ```ignore
/// ember_function::reactor!(ember_function::json(count));
///
/// fn count(items: Vec<serde_json::Value>) -> Result<usize, std::convert::Infallible> {
///     Ok(items.len())
/// }
/// ```
///
/// An event that does not parse as `T` fails as `invalid event: <serde_json's error>`, the
/// handler's `Err(e)` as `e`.
#[cfg(feature = "json")]
pub fn json<T, R, E>(
    handler: impl FnOnce(T) -> Result<R, E>,
) -> impl FnOnce(&[u8]) -> Result<Vec<u8>, String>
where
    T: serde::de::DeserializeOwned,
    R: serde::Serialize,
    E: Display,
{
    move |event| {
        let event = serde_json::from_slice(event).map_err(|e| format!("invalid event: {e}"))?;
        let response = handler(event).map_err(|e| e.to_string())?;
        serde_json::to_vec(&response).map_err(|e| format!("serializing the response: {e}"))
    }
}
