//! A reactor function using serde: `{"items":[{"name":..,"price":..,"qty":..},...]}` in,
//! `{"count":N,"total":sum(price*qty),"names":[sorted upper-cased names]}` out.

use serde::{Deserialize, Serialize};
use std::io::{self, Read, Write};
use std::process;

#[derive(Deserialize)]
struct Event {
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    name: String,
    price: f64,
    qty: f64,
}

#[derive(Serialize)]
struct Summary {
    count: usize,
    total: f64,
    names: Vec<String>,
}

fn summarize(event: Event) -> Summary {
    // Not `.sum()`: f64's `Sum` starts from -0.0, which would make an empty list total -0.0.
    let total = event
        .items
        .iter()
        .fold(0.0, |total, i| total + i.price * i.qty);
    let mut names: Vec<String> = event.items.iter().map(|i| i.name.to_uppercase()).collect();
    names.sort();
    Summary {
        count: event.items.len(),
        total,
        names,
    }
}

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

/// Invalid input is logged and ends the invocation with exit code 1 (a function error).
#[unsafe(no_mangle)]
pub extern "C" fn handle() {
    let mut input = Vec::new();
    if let Err(e) = io::stdin().read_to_end(&mut input) {
        fail(&format!("reading the event: {e}"));
    }
    let event: Event = match serde_json::from_slice(&input) {
        Ok(event) => event,
        Err(e) => fail(&format!("invalid event: {e}")),
    };
    let body = serde_json::to_vec(&summarize(event)).expect("the summary serializes");
    // Flush: the instance outlives this invocation, and so would a buffered response.
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_all(&body).and_then(|()| out.flush()) {
        fail(&format!("writing the response: {e}"));
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("json-transform: {msg}");
    process::exit(1)
}
