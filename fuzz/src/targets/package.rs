//! Deployment package checks: `ember_core::package::extract_module` over ZIP bytes a
//! tenant uploads, with small limits so that the limit paths are reached.
//!
//! Invariants: what is accepted keeps the limits and names a plain relative `.wasm` path.

use std::io::{Cursor, Write};

use ember_core::package::{extract_module, Limits};
use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, ZipWriter};

use crate::{error_label, Target};

pub const TARGET: Target = Target {
    name: "package",
    fed_by: "a tenant (CreateFunction / UpdateFunctionCode ZIP bytes)",
    seeds,
    dictionary: &[
        b"PK\x03\x04",
        b"PK\x01\x02",
        b"PK\x05\x06",
        b".wasm",
        b"../",
        b"/",
        b"\\",
        &[0xff, 0xff, 0xff, 0xff],
    ],
    run,
};

const LIMITS: Limits = Limits {
    zipped: 64 * 1024,
    unzipped: 256 * 1024,
    entries: 8,
};

fn seeds() -> Vec<Vec<u8>> {
    let wasm: &[u8] = b"\0asm\x01\0\0\0";
    let zeros = vec![0u8; 300 * 1024];
    vec![
        zip_of(&[("fn.wasm", wasm)], CompressionMethod::Stored),
        zip_of(&[("fn.wasm", wasm)], CompressionMethod::Deflated),
        zip_of(
            &[("lib/", b""), ("lib/fn.wasm", wasm), ("README.md", b"# hi")],
            CompressionMethod::Deflated,
        ),
        zip_of(
            &[("a.wasm", wasm), ("b.wasm", wasm)],
            CompressionMethod::Stored,
        ),
        zip_of(&[("../up.wasm", wasm)], CompressionMethod::Stored),
        zip_of(&[("fn.wasm", &zeros)], CompressionMethod::Deflated),
    ]
}

fn zip_of(entries: &[(&str, &[u8])], method: CompressionMethod) -> Vec<u8> {
    let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
    let options = SimpleFileOptions::default().compression_method(method);
    for (name, bytes) in entries {
        if name.ends_with('/') {
            writer.add_directory(*name, options).expect("seed dir");
        } else {
            writer.start_file(*name, options).expect("seed file");
            writer.write_all(bytes).expect("seed bytes");
        }
    }
    writer.finish().expect("seed zip").into_inner()
}

fn run(input: &[u8]) -> String {
    match extract_module(input, &LIMITS) {
        Ok(package) => {
            let name = &package.module_name;
            assert!(
                name.to_ascii_lowercase().ends_with(".wasm"),
                "accepted module {name:?}"
            );
            assert!(
                !name.starts_with('/')
                    && !name.contains('\\')
                    && !name.contains('\0')
                    && !name.split('/').any(|part| part == ".."),
                "accepted a module path that is not plain: {name:?}"
            );
            assert!(package.unzipped_size <= LIMITS.unzipped, "over the limit");
            assert!(package.module.len() as u64 <= package.unzipped_size);
            "ok".to_owned()
        }
        Err(err) => error_label(&err),
    }
}
