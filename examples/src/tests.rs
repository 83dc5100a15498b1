//! What can be checked without a VM: every module is valid WebAssembly of the kind it claims
//! to be, imports nothing but WASI preview 1, and needs no wasm proposal the runtime lacks.

use super::*;
use std::collections::BTreeSet;
use wasmparser::{
    ExternalKind, FuncType, Parser, Payload, TypeRef, ValType, Validator, WasmFeatures,
};

const WASI: &str = "wasi_snapshot_preview1";

/// Every WASI function some module imports. The runtime must provide each (a real
/// implementation or an error-returning stub) or instantiation fails. A toolchain or
/// dependency bump that changes the list fails this test on purpose: update the list and the
/// guest together.
const WASI_IMPORTS: &[&str] = &[
    "environ_get",
    "environ_sizes_get",
    "fd_read",
    "fd_write",
    "proc_exit",
];

/// What `rustc` emits for `wasm32-wasip1` by default (LLVM's "generic" CPU): WebAssembly 2.0
/// without SIMD. Threads, tail calls, exceptions, memory64, multi-memory and GC stay off.
fn rust_default_features() -> WasmFeatures {
    WasmFeatures::WASM2 & !WasmFeatures::SIMD
}

/// The parts of a module these tests look at.
#[derive(Default)]
struct Summary {
    /// (module, name, function type if a function) of every import, in order.
    imports: Vec<(String, String, Option<FuncType>)>,
    /// Exported functions with their types.
    exported_funcs: Vec<(String, FuncType)>,
    /// Names of every export, of any kind.
    exports: Vec<(String, ExternalKind)>,
}

impl Summary {
    fn of(bytes: &[u8]) -> Summary {
        let mut types = Vec::new();
        // Type index of every function, imported ones first (the function index space).
        let mut func_types = Vec::new();
        let mut exports = Vec::new();
        let mut summary = Summary::default();
        for payload in Parser::new(0).parse_all(bytes) {
            match payload.expect("the module parses") {
                Payload::TypeSection(reader) => {
                    for ty in reader.into_iter_err_on_gc_types() {
                        types.push(ty.expect("a function type"));
                    }
                }
                Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import.expect("an import");
                        let mut func = None;
                        if let TypeRef::Func(ty) = import.ty {
                            func_types.push(ty);
                            func = Some(types[ty as usize].clone());
                        }
                        summary.imports.push((
                            import.module.to_string(),
                            import.name.to_string(),
                            func,
                        ));
                    }
                }
                Payload::FunctionSection(reader) => {
                    for ty in reader {
                        func_types.push(ty.expect("a function's type index"));
                    }
                }
                Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export.expect("an export");
                        exports.push((export.name.to_string(), export.kind, export.index));
                    }
                }
                _ => {}
            }
        }
        for (name, kind, index) in exports {
            if kind == ExternalKind::Func {
                let ty = types[func_types[index as usize] as usize].clone();
                summary.exported_funcs.push((name.clone(), ty));
            }
            summary.exports.push((name, kind));
        }
        summary
    }

    fn import_names(&self) -> Vec<&str> {
        self.imports
            .iter()
            .map(|(_, name, _)| name.as_str())
            .collect()
    }

    fn export_names(&self) -> Vec<&str> {
        self.exports.iter().map(|(name, _)| name.as_str()).collect()
    }

    fn func(&self, name: &str) -> Option<&FuncType> {
        self.exported_funcs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, ty)| ty)
    }
}

fn is_command(name: &str) -> bool {
    COMMANDS.contains(&name)
}

#[test]
fn all_lists_every_module_once() {
    let names: Vec<&str> = all().iter().map(|(name, _)| *name).collect();
    let unique: BTreeSet<&str> = names.iter().copied().collect();
    assert_eq!(names.len(), 11, "{names:?}");
    assert_eq!(unique.len(), names.len(), "duplicate names in {names:?}");
    for command in COMMANDS {
        assert!(unique.contains(command), "{command} is not in all()");
    }
}

#[test]
fn every_module_validates() {
    for (name, bytes) in all() {
        assert!(bytes.starts_with(b"\0asm"), "{name}: no wasm magic");
        if let Err(e) = Validator::new().validate_all(bytes) {
            panic!("{name} ({} bytes) is not valid wasm: {e}", bytes.len());
        }
    }
}

#[test]
fn every_module_needs_only_rusts_default_wasm_features() {
    for (name, bytes) in all() {
        if let Err(e) = Validator::new_with_features(rust_default_features()).validate_all(bytes) {
            panic!("{name} needs a wasm feature beyond 2.0-without-SIMD: {e}");
        }
    }
}

#[test]
fn commands_export_start_and_memory() {
    for (name, bytes) in all().iter().filter(|(n, _)| is_command(n)) {
        let module = Summary::of(bytes);
        let exports = module.export_names();
        let start = module
            .func("_start")
            .unwrap_or_else(|| panic!("{name} exports no _start function; exports: {exports:?}"));
        assert!(
            start.params().is_empty() && start.results().is_empty(),
            "{name}: _start is {start}, not () -> ()"
        );
        assert!(
            module.func("_initialize").is_none(),
            "{name}: a command must not export _initialize; exports: {exports:?}"
        );
        assert!(
            module
                .exports
                .contains(&("memory".into(), ExternalKind::Memory)),
            "{name} exports no memory; exports: {exports:?}"
        );
    }
}

#[test]
fn reactors_export_initialize_handle_and_memory() {
    for (name, bytes) in all().iter().filter(|(n, _)| !is_command(n)) {
        let module = Summary::of(bytes);
        let exports = module.export_names();
        for func in ["_initialize", "handle"] {
            let ty = module.func(func).unwrap_or_else(|| {
                panic!("{name} exports no {func} function; exports: {exports:?}")
            });
            assert!(
                ty.params().is_empty() && ty.results().is_empty(),
                "{name}: {func} is {ty}, not () -> ()"
            );
        }
        assert!(
            module.func("_start").is_none(),
            "{name}: a reactor must not export _start; exports: {exports:?}"
        );
        assert!(
            module
                .exports
                .contains(&("memory".into(), ExternalKind::Memory)),
            "{name} exports no memory; exports: {exports:?}"
        );
    }
}

#[test]
fn modules_import_only_known_wasi_functions() {
    let mut union = BTreeSet::new();
    let mut report = String::new();
    for (name, bytes) in all() {
        let module = Summary::of(bytes);
        report += &format!("\n  {name}: {:?}", module.import_names());
        for (from, item, _) in &module.imports {
            assert_eq!(
                from, WASI,
                "{name} imports {from}::{item}; only {WASI} is provided. Imports:{report}"
            );
            union.insert(item.clone());
        }
    }
    let expected: BTreeSet<String> = WASI_IMPORTS.iter().map(|s| s.to_string()).collect();
    assert_eq!(
        union, expected,
        "the WASI functions the modules import changed; per module:{report}"
    );
}

#[test]
fn wasi_imports_have_their_preview1_signatures() {
    for (name, bytes) in all() {
        for (_, item, ty) in &Summary::of(bytes).imports {
            let ty = ty
                .as_ref()
                .unwrap_or_else(|| panic!("{name} imports {item}, which is not a function"));
            let expected = preview1_signature(item)
                .unwrap_or_else(|| panic!("{name} imports {item} {ty}; add its signature here"));
            assert_eq!(
                (ty.params(), ty.results()),
                (expected.0.as_slice(), expected.1.as_slice()),
                "{name}: {item} is {ty}"
            );
        }
    }
}

/// WASI preview 1 signatures (params, results) of the functions the contract names: every
/// argument is an i32 (pointer, length, fd or id) but clock_time_get's precision, and every
/// result an i32 errno but proc_exit's, which has none.
fn preview1_signature(name: &str) -> Option<(Vec<ValType>, Vec<ValType>)> {
    use ValType::{I32, I64};
    Some(match name {
        "args_get" | "args_sizes_get" | "environ_get" | "environ_sizes_get" | "random_get"
        | "fd_fdstat_get" | "fd_prestat_get" | "clock_res_get" => (vec![I32, I32], vec![I32]),
        "fd_prestat_dir_name" => (vec![I32, I32, I32], vec![I32]),
        "fd_read" | "fd_write" => (vec![I32, I32, I32, I32], vec![I32]),
        "fd_close" => (vec![I32], vec![I32]),
        "clock_time_get" => (vec![I32, I64, I32], vec![I32]),
        "sched_yield" => (vec![], vec![I32]),
        "proc_exit" => (vec![I32], vec![]),
        _ => return None,
    })
}

#[test]
fn fixtures_import_nothing() {
    for (name, bytes) in [("trap", TRAP), ("loop", LOOP), ("init-trap", INIT_TRAP)] {
        let module = Summary::of(bytes);
        assert!(module.imports.is_empty(), "{name}: {:?}", module.imports);
    }
}

#[test]
fn garbage_is_not_a_module() {
    // The runtime's first line of defence; make sure the validator used above is not lenient.
    assert!(Validator::new().validate_all(b"not wasm at all").is_err());
    let mut truncated = ECHO.to_vec();
    truncated.truncate(ECHO.len() / 2);
    assert!(Validator::new().validate_all(&truncated).is_err());
}

#[test]
fn digest_pattern_matches_an_independent_implementation() {
    // python3 -c "import hashlib; print(hashlib.sha256(bytes(((i*31+7) & 0xff)
    //     for i in range(N << 20))).hexdigest())"
    assert_eq!(
        digest_pattern(1),
        "06b7bbfb7824aa03382051691630eb26de85102d1b08a81e907ec0744cd8a286"
    );
    assert_eq!(
        digest_pattern(4),
        "59f41f46fe52079f24edc303087a25634c91bee7491b53d99695c39c4d934696"
    );
    // No data at all: SHA-256 of the empty string.
    assert_eq!(
        digest_pattern(0),
        "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    );
}
