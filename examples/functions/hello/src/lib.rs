//! A reactor function: the module is instantiated once per environment, `_initialize` runs
//! once, then the exported `handle` runs once per invocation. The event is stdin (read to
//! EOF), the response is stdout, logs go to stderr.

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

/// Responds `{"message":"Hello, <name>!"}` for the event `{"name":"<name>"}`; an empty event,
/// or one without a string `name`, greets "world".
#[unsafe(no_mangle)]
pub extern "C" fn handle() {
    let mut event = Vec::new();
    if let Err(e) = io::stdin().read_to_end(&mut event) {
        fail(&format!("reading the event: {e}"));
    }
    let name = if event.trim_ascii().is_empty() {
        "world".to_string()
    } else {
        match serde_json::from_slice::<serde_json::Value>(&event) {
            Ok(event) => event
                .get("name")
                .and_then(|n| n.as_str())
                .unwrap_or("world")
                .to_string(),
            Err(e) => fail(&format!("the event is not JSON: {e}")),
        }
    };
    eprintln!("hello: greeting {name:?}");
    let response = serde_json::json!({ "message": format!("Hello, {name}!") });
    respond(&serde_json::to_vec(&response).expect("a JSON value serializes"));
}

/// Writes the response. A reactor's instance outlives the invocation, so flush: bytes left in
/// stdout's buffer would only come out in a later invocation.
fn respond(body: &[u8]) {
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(body).and_then(|()| out.flush()) {
        fail(&format!("writing the response: {e}"));
    }
}

/// Logs `msg` and ends the invocation as a function error.
fn fail(msg: &str) -> ! {
    eprintln!("hello: {msg}");
    process::exit(1)
}
