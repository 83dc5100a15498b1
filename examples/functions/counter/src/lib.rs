//! A reactor function that keeps state: one instance serves every invocation of an
//! environment, so this counter goes 1, 2, 3, … until the environment is recycled.

use std::io::{self, Write};
use std::sync::atomic::{AtomicU64, Ordering};

static COUNT: AtomicU64 = AtomicU64::new(0);

/// The reactor's start function: the runtime calls it once, right after instantiation.
/// Rust does not provide one for a cdylib, so define it here: it runs the module's static
/// constructors (wasi-libc's and any dependency's). Referencing `__wasm_call_ctors` also stops
/// the linker from treating the module as a command, which wraps every export to run the
/// constructors before and the destructors after each call.
#[unsafe(no_mangle)]
pub extern "C" fn _initialize() {
    unsafe extern "C" {
        fn __wasm_call_ctors();
    }
    // SAFETY: the linker-synthesised constructor list; the runtime calls `_initialize` once.
    unsafe { __wasm_call_ctors() }
}

/// Responds `{"count":n}` for the n-th invocation of this instance.
#[unsafe(no_mangle)]
pub extern "C" fn handle() {
    let n = COUNT.fetch_add(1, Ordering::Relaxed) + 1;
    let mut out = io::stdout().lock();
    if let Err(e) = write!(out, "{{\"count\":{n}}}").and_then(|()| out.flush()) {
        eprintln!("counter: writing the response: {e}");
        std::process::exit(1);
    }
}
