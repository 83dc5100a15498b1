//! A CPU-bound reactor function: `{"mib":N}` (default 1) in, `{"mib":N,"sha256":"<hex>"}` out,
//! the digest of N MiB of `sha_pattern`'s byte pattern.

use std::io::{self, Read, Write};
use std::process;

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

#[unsafe(no_mangle)]
pub extern "C" fn handle() {
    let mut event = Vec::new();
    if let Err(e) = io::stdin().read_to_end(&mut event) {
        fail(&format!("reading the event: {e}"));
    }
    let mib = if event.trim_ascii().is_empty() {
        1
    } else {
        match serde_json::from_slice::<serde_json::Value>(&event) {
            Ok(event) => match event.get("mib") {
                None => 1,
                Some(n) => match n.as_u64().and_then(|n| usize::try_from(n).ok()) {
                    Some(n) => n,
                    None => fail(&format!("\"mib\" must be a non-negative integer, not {n}")),
                },
            },
            Err(e) => fail(&format!("the event is not JSON: {e}")),
        }
    };
    let response = serde_json::json!({ "mib": mib, "sha256": sha_pattern::digest_pattern(mib) });
    let body = serde_json::to_vec(&response).expect("a JSON value serializes");
    // Flush: the instance outlives this invocation, and so would a buffered response.
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(&body).and_then(|()| out.flush()) {
        fail(&format!("writing the response: {e}"));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("sha-heavy: {msg}");
    process::exit(1)
}
