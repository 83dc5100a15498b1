//! "Optimized once": a function's module is validated at upload, not at every cold start.
//! [`prepare`] takes an uploaded ZIP through [`crate::package`], fully validates the wasm,
//! checks that it imports only what guest-init provides, and records whether it is a command
//! or a reactor, along with the digests the API reports and workers cache by.
//!
//! The rules are the ones `host-vmm` applies before any VM starts (its
//! `function/module.rs`); they are repeated here because the control plane must refuse a
//! module at upload without depending on the VMM.

use base64::Engine;
use ember_wire::function::ModuleKind;
use sha2::{Digest, Sha256};

use crate::package::{self, Limits, PackageError};

/// A reactor's handler export when the function names none (Lambda's `Handler`).
pub const DEFAULT_HANDLER: &str = "handle";

/// An uploaded function's code, checked and ready to store.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PreparedModule {
    /// Command (`_start`) or reactor (the handler export).
    pub kind: ModuleKind,
    /// Lambda's `CodeSha256`: standard base64 of the SHA-256 of the ZIP as uploaded.
    pub code_sha256: String,
    /// Lambda's `CodeSize`: bytes of the ZIP as uploaded.
    pub code_size: u64,
    /// The module's path inside the ZIP.
    pub module_name: String,
    /// SHA-256 of the module's bytes: what workers cache and environments are keyed by.
    pub module_sha256: [u8; 32],
    /// The module itself.
    pub bytes: Vec<u8>,
}

/// Checks an uploaded ZIP and the module inside it, for a function whose handler is
/// `handler` (used only if the module is a reactor).
pub fn prepare(zip: &[u8], handler: &str, limits: &Limits) -> Result<PreparedModule, PackageError> {
    let package = package::extract_module(zip, limits)?;
    let kind = inspect(&package.module, handler).map_err(|reason| PackageError::InvalidModule {
        module: package.module_name.clone(),
        reason,
    })?;
    Ok(PreparedModule {
        kind,
        code_sha256: base64::engine::general_purpose::STANDARD.encode(Sha256::digest(zip)),
        code_size: zip.len() as u64,
        module_name: package.module_name,
        module_sha256: Sha256::digest(&package.module).into(),
        bytes: package.module,
    })
}

/// Validates `bytes` and tells whether it is a command or a reactor with `handler` (the
/// same check a worker runs); the error is the reason, for a message. Also what to run
/// again on stored code when only a function's handler changes.
pub use ember_wire::module::inspect;

#[cfg(test)]
mod tests {
    use super::*;

    /// The only import module guest-init provides.
    const WASI: &str = "wasi_snapshot_preview1";
    use crate::package::tests::zip_of;

    #[test]
    fn prepares_real_functions() {
        let zip = zip_of(&[("hello.wasm", ember_examples::HELLO)]);
        let prepared = prepare(&zip, DEFAULT_HANDLER, &Limits::default()).unwrap();
        assert_eq!(prepared.kind, ModuleKind::Reactor);
        assert_eq!(prepared.module_name, "hello.wasm");
        assert_eq!(prepared.bytes, ember_examples::HELLO);
        assert_eq!(prepared.code_size, zip.len() as u64);
        assert_eq!(
            prepared.module_sha256,
            <[u8; 32]>::from(Sha256::digest(ember_examples::HELLO))
        );
        // CodeSha256 is of the ZIP, not of the module: 44 characters of padded base64.
        let zip_digest = base64::engine::general_purpose::STANDARD
            .decode(&prepared.code_sha256)
            .unwrap();
        assert_eq!(zip_digest, Sha256::digest(&zip).to_vec());
        assert_ne!(zip_digest, prepared.module_sha256);
        assert_eq!(prepared.code_sha256.len(), 44);

        let zip = zip_of(&[("bin/echo.wasm", ember_examples::ECHO)]);
        let prepared = prepare(&zip, DEFAULT_HANDLER, &Limits::default()).unwrap();
        assert_eq!(prepared.kind, ModuleKind::Command);
    }

    #[test]
    fn the_handler_decides_a_reactor() {
        let zip = zip_of(&[("hello.wasm", ember_examples::HELLO)]);
        let err = prepare(&zip, "main", &Limits::default()).unwrap_err();
        let PackageError::InvalidModule { module, reason } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(module, "hello.wasm");
        assert!(reason.contains("neither `_start`"), "{reason}");
        assert!(err
            .to_string()
            .starts_with("Invalid WebAssembly module \"hello.wasm\""));
    }

    /// A module that imports `module.name` as a function and exports `handle`.
    fn importing(module: &str, name: &str) -> Vec<u8> {
        let mut import = vec![1, module.len() as u8];
        import.extend_from_slice(module.as_bytes());
        import.push(name.len() as u8);
        import.extend_from_slice(name.as_bytes());
        import.extend_from_slice(&[0, 0]);
        let mut bytes = b"\0asm\x01\0\0\0".to_vec();
        bytes.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // type 0: () -> ()
        bytes.push(2);
        bytes.push(import.len() as u8);
        bytes.extend_from_slice(&import);
        bytes.extend_from_slice(&[3, 2, 1, 0]); // function 1 of type 0
        bytes.extend_from_slice(&[7, 10, 1, 6]); // export section, one export of 6 bytes
        bytes.extend_from_slice(b"handle");
        bytes.extend_from_slice(&[0, 1]); // function 1
        bytes.extend_from_slice(&[10, 4, 1, 2, 0, 0x0b]); // its empty body
        bytes
    }

    #[test]
    fn imports_only_wasi_functions() {
        let ok = importing(WASI, "fd_write");
        assert_eq!(inspect(&ok, "handle"), Ok(ModuleKind::Reactor));
        let err = inspect(&importing("env", "abort"), "handle").unwrap_err();
        assert!(err.contains("unsupported import env.abort"), "{err}");
    }

    #[test]
    fn refuses_invalid_wasm() {
        // Not wasm at all, a truncated real module, and one that parses but leaves an i32
        // on the stack of a function returning nothing (only full validation sees that).
        let mut mistyped = importing(WASI, "fd_write");
        let body = mistyped.len() - 6;
        mistyped.truncate(body);
        mistyped.extend_from_slice(&[10, 6, 1, 4, 0, 0x41, 0, 0x0b]);
        assert!(wasmparser::Parser::new(0)
            .parse_all(&mistyped)
            .all(|p| p.is_ok()));
        for bytes in [
            &b"\0asm\x02\0\0\0"[..],
            &b"PK\x03\x04 not wasm"[..],
            &ember_examples::HELLO[..ember_examples::HELLO.len() / 2],
            &mistyped,
        ] {
            let zip = zip_of(&[("f.wasm", bytes)]);
            let err = prepare(&zip, DEFAULT_HANDLER, &Limits::default()).unwrap_err();
            let PackageError::InvalidModule { reason, .. } = &err else {
                panic!("{err:?}")
            };
            assert!(reason.starts_with("invalid WebAssembly module"), "{reason}");
        }
    }

    #[test]
    fn package_errors_come_first() {
        let zip = zip_of(&[("../f.wasm", ember_examples::HELLO)]);
        assert!(matches!(
            prepare(&zip, DEFAULT_HANDLER, &Limits::default()),
            Err(PackageError::Traversal { .. })
        ));
    }
}
