//! The module check control runs at upload and the worker runs before any VM:
//! `ember_wire::module::inspect` over bytes a tenant uploaded.

use ember_wire::function::ModuleKind;
use ember_wire::module::inspect;

use crate::Target;

pub const TARGET: Target = Target {
    name: "module",
    fed_by: "a tenant (the module inside an uploaded package)",
    seeds,
    dictionary: &[
        b"\0asm\x01\0\0\0",
        b"wasi_snapshot_preview1",
        b"_start",
        b"handle",
        &[0x60, 0, 0],
        &[0x0b],
    ],
    run,
};

/// Handlers the first byte chooses from.
const HANDLERS: &[&str] = &["handle", "_start", "main", ""];

fn seeds() -> Vec<Vec<u8>> {
    let texts = [
        r#"(module
             (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
             (memory (export "memory") 1)
             (func (export "_initialize"))
             (func (export "handle")))"#,
        r#"(module (memory 1) (data (i32.const 8) "hi") (func (export "_start")))"#,
        r#"(module
             (table 2 funcref) (elem (i32.const 0) 0 1)
             (global (mut i32) (i32.const 0))
             (func (result i32) i32.const 1)
             (func (export "handle") (result i32)
               i32.const 0 call_indirect (result i32)))"#,
        r#"(module (import "env" "f" (func)))"#,
    ];
    texts
        .iter()
        .map(|text| [vec![0], wat::parse_str(text).expect("seed module")].concat())
        .collect()
}

fn run(input: &[u8]) -> String {
    let Some((&which, bytes)) = input.split_first() else {
        return "empty".to_owned();
    };
    let handler = HANDLERS[usize::from(which) % HANDLERS.len()];
    match inspect(bytes, handler) {
        Ok(ModuleKind::Command) => "ok:command".to_owned(),
        Ok(ModuleKind::Reactor) => "ok:reactor".to_owned(),
        // The message's first words say which check refused it; offsets, numbers and
        // names that follow would make every input an outcome of its own.
        Err(message) => {
            let words: Vec<&str> = message
                .split([' ', ':', '('])
                .filter(|w| !w.is_empty())
                .take_while(|w| w.bytes().all(|b| b.is_ascii_alphabetic() || b == b'-'))
                .take(5)
                .collect();
            format!("err:{}", words.join(" "))
        }
    }
}
