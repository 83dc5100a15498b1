//! A reactor function that shows its configuration: responds with every environment variable
//! as one JSON object, sorted by key. Configuration and credentials reach a function this way.

use std::collections::BTreeMap;
use std::env;
use std::io::{self, Write};

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
    // `vars_os` rather than `vars`: a variable that is not UTF-8 must not panic (trap).
    let vars: BTreeMap<String, String> = env::vars_os()
        .map(|(k, v)| {
            (
                k.to_string_lossy().into_owned(),
                v.to_string_lossy().into_owned(),
            )
        })
        .collect();
    let body = serde_json::to_vec(&vars).expect("a map of strings serializes");
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(&body).and_then(|()| out.flush()) {
        eprintln!("env-reader: writing the response: {e}");
        std::process::exit(1);
    }
}
