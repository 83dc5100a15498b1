//! The one check of a function's module, shared by the control plane (at upload) and the
//! worker (before any VM exists): valid WebAssembly, imports only what guest-init
//! provides, and exports either `_start` or the handler. Feature `inspect`.

use alloc::format;
use alloc::string::{String, ToString};

use wasmparser::{Parser, Payload, TypeRef, Validator};

use crate::function::ModuleKind;

/// The only import module guest-init provides.
const WASI: &str = "wasi_snapshot_preview1";

/// Validates `bytes` and tells whether it is a command or a reactor with `handler`.
pub fn inspect(bytes: &[u8], handler: &str) -> Result<ModuleKind, String> {
    Validator::new()
        .validate_all(bytes)
        .map_err(|e| format!("invalid WebAssembly module: {e}"))?;
    let (mut start, mut reactor) = (false, false);
    for payload in Parser::new(0).parse_all(bytes) {
        match payload.map_err(|e| e.to_string())? {
            Payload::ImportSection(imports) => {
                for import in imports.into_imports() {
                    let import = import.map_err(|e| e.to_string())?;
                    if import.module != WASI || !matches!(import.ty, TypeRef::Func(_)) {
                        return Err(format!(
                            "unsupported import {}.{}: functions may import only {WASI} functions",
                            import.module, import.name
                        ));
                    }
                }
            }
            Payload::ExportSection(exports) => {
                for export in exports {
                    let export = export.map_err(|e| e.to_string())?;
                    if export.kind == wasmparser::ExternalKind::Func {
                        start |= export.name == "_start";
                        reactor |= export.name == handler;
                    }
                }
            }
            _ => {}
        }
    }
    match (start, reactor) {
        (true, _) => Ok(ModuleKind::Command),
        (false, true) => Ok(ModuleKind::Reactor),
        (false, false) => Err(format!(
            "module exports neither `_start` (a command) nor `{handler}` (a reactor's handler)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal module: magic, version, then the given sections.
    fn module(sections: &[u8]) -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        m.extend_from_slice(sections);
        m
    }

    // type section: one type () -> (); function section: one function of type 0;
    // code section: one empty body.
    const TYPE: &[u8] = &[1, 4, 1, 0x60, 0, 0];
    const FUNC: &[u8] = &[3, 2, 1, 0];
    const CODE: &[u8] = &[10, 4, 1, 2, 0, 0x0b];

    fn with_export(name: &str) -> Vec<u8> {
        let mut export = vec![1, name.len() as u8];
        export.extend_from_slice(name.as_bytes());
        export.extend_from_slice(&[0, 0]);
        let mut sections = TYPE.to_vec();
        sections.extend_from_slice(FUNC);
        sections.push(7);
        sections.push(export.len() as u8);
        sections.extend_from_slice(&export);
        sections.extend_from_slice(CODE);
        module(&sections)
    }

    use alloc::vec;
    use alloc::vec::Vec;

    #[test]
    fn tells_commands_from_reactors() {
        assert_eq!(
            inspect(&with_export("_start"), "handle"),
            Ok(ModuleKind::Command)
        );
        assert_eq!(
            inspect(&with_export("handle"), "handle"),
            Ok(ModuleKind::Reactor)
        );
        assert_eq!(inspect(&with_export("run"), "run"), Ok(ModuleKind::Reactor));
        let err = inspect(&with_export("other"), "handle").unwrap_err();
        assert!(err.contains("neither"), "{err}");
    }

    #[test]
    fn refuses_garbage_and_foreign_imports() {
        let err = inspect(b"not wasm at all", "handle").unwrap_err();
        assert!(err.starts_with("invalid WebAssembly module"), "{err}");
        // import section: one function import env.f of type 0
        let mut sections = TYPE.to_vec();
        sections.extend_from_slice(&[2, 9, 1, 3, b'e', b'n', b'v', 1, b'f', 0, 0]);
        let err = inspect(&module(&sections), "handle").unwrap_err();
        assert!(err.contains("unsupported import env.f"), "{err}");
    }
}
