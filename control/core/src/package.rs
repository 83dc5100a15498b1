//! Checks an uploaded deployment package (Lambda's `Code.ZipFile` bytes) and takes the
//! function's WebAssembly module out of it.
//!
//! Nothing in the archive is trusted: sizes are counted from the bytes actually
//! decompressed (a zip bomb's headers may claim anything), reading stops as soon as the
//! running total passes the limit, the number of entries is capped, and entry names must be
//! plain relative paths even though nothing is ever extracted to disk (the names end up in
//! messages and, later, perhaps in a worker's cache). The function's module is the archive's
//! single `*.wasm` file, wherever it sits.

use std::io::{self, Cursor, Read};

use zip::ZipArchive;

/// Lambda's limit for a ZIP uploaded directly: 50 MiB.
pub const MAX_ZIPPED: u64 = 50 * 1024 * 1024;
/// Lambda's limit for a package's unzipped contents: 250 MiB.
pub const MAX_UNZIPPED: u64 = 250 * 1024 * 1024;
/// The most entries (files and directories) one package may hold.
pub const MAX_ENTRIES: usize = 10_000;

/// Size limits of a package; [`Limits::default`] is Lambda's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Most bytes of the ZIP itself.
    pub zipped: u64,
    /// Most bytes of all entries together, decompressed.
    pub unzipped: u64,
    /// Most entries in the archive.
    pub entries: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            zipped: MAX_ZIPPED,
            unzipped: MAX_UNZIPPED,
            entries: MAX_ENTRIES,
        }
    }
}

/// The module found in a package.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Package {
    /// The module's path inside the archive.
    pub module_name: String,
    /// The module's bytes, decompressed (not yet validated).
    pub module: Vec<u8>,
    /// Bytes of all entries together, decompressed.
    pub unzipped_size: u64,
}

/// Why a package was refused. Messages read like Lambda's; each variant's doc names the
/// Lambda error type (and HTTP status) it stands for.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PackageError {
    /// The ZIP itself is over the limit: `RequestTooLargeException` (413).
    #[error("Zipped size must be at most {limit} bytes (the uploaded file has {size})")]
    TooLarge { size: u64, limit: u64 },
    /// The contents decompress to more than the limit: `InvalidParameterValueException` (400).
    #[error("Unzipped size must be at most {limit} bytes")]
    UnzippedTooLarge { limit: u64 },
    /// More entries than the limit: `InvalidParameterValueException` (400).
    #[error("Uploaded file must contain at most {limit} entries (it has {count})")]
    TooManyEntries { count: usize, limit: usize },
    /// Empty, not a ZIP, corrupt, encrypted or compressed with an unsupported method:
    /// `InvalidParameterValueException` (400).
    #[error("{message}")]
    InvalidZip { message: String },
    /// An entry name that is absolute, climbs out with `..`, or holds `\` or NUL:
    /// `InvalidParameterValueException` (400).
    #[error("Could not unzip uploaded file: entry {name:?} is not a plain relative path")]
    Traversal { name: String },
    /// No `*.wasm` file: `InvalidParameterValueException` (400).
    #[error(
        "Uploaded file must contain a WebAssembly module (a file ending in .wasm); it has none"
    )]
    NoModule,
    /// More than one `*.wasm` file: `InvalidParameterValueException` (400).
    #[error("Uploaded file must contain exactly one WebAssembly module (.wasm); it has {}: {}", names.len(), names.join(", "))]
    SeveralModules { names: Vec<String> },
    /// The module is not valid WebAssembly, imports what the platform does not provide, or
    /// exports neither `_start` nor the handler: `InvalidParameterValueException` (400).
    /// Raised by [`crate::module`].
    #[error("Invalid WebAssembly module {module:?}: {reason}")]
    InvalidModule { module: String, reason: String },
}

impl PackageError {
    fn empty() -> Self {
        PackageError::InvalidZip {
            message: "Uploaded file must be a non-empty zip".into(),
        }
    }

    fn unreadable(detail: impl std::fmt::Display) -> Self {
        PackageError::InvalidZip {
            message: format!(
                "Could not unzip uploaded file. Please check your file, then try to upload again. ({detail})"
            ),
        }
    }
}

/// Checks `zip` against `limits` and returns its single WebAssembly module.
pub fn extract_module(zip: &[u8], limits: &Limits) -> Result<Package, PackageError> {
    if zip.is_empty() {
        return Err(PackageError::empty());
    }
    let size = zip.len() as u64;
    if size > limits.zipped {
        return Err(PackageError::TooLarge {
            size,
            limit: limits.zipped,
        });
    }
    let mut archive = ZipArchive::new(Cursor::new(zip)).map_err(PackageError::unreadable)?;
    if archive.is_empty() {
        return Err(PackageError::empty());
    }
    if archive.len() > limits.entries {
        return Err(PackageError::TooManyEntries {
            count: archive.len(),
            limit: limits.entries,
        });
    }

    // First the names, without decompressing anything.
    let mut modules = Vec::new();
    for index in 0..archive.len() {
        let entry = archive
            .by_index_raw(index)
            .map_err(PackageError::unreadable)?;
        let name = entry.name().map_err(PackageError::unreadable)?.into_owned();
        if !is_plain_relative(&name) || entry.enclosed_name().is_none() {
            return Err(PackageError::Traversal { name });
        }
        if entry.is_file() && is_wasm(&name) {
            modules.push((index, name));
        }
    }
    let (module_index, module_name) = match modules.len() {
        0 => return Err(PackageError::NoModule),
        1 => modules.swap_remove(0),
        _ => {
            return Err(PackageError::SeveralModules {
                names: modules.into_iter().map(|(_, name)| name).collect(),
            })
        }
    };

    // Then every entry's contents, counted as they come out of the decompressor.
    let mut unzipped_size = 0u64;
    let mut module = Vec::new();
    for index in 0..archive.len() {
        let entry = archive.by_index(index).map_err(PackageError::unreadable)?;
        let remaining = limits.unzipped - unzipped_size;
        // One byte past what is left is enough to know the limit is passed.
        let mut capped = entry.take(remaining.saturating_add(1));
        let read = if index == module_index {
            capped.read_to_end(&mut module).map(|n| n as u64)
        } else {
            io::copy(&mut capped, &mut io::sink())
        }
        .map_err(PackageError::unreadable)?;
        if read > remaining {
            return Err(PackageError::UnzippedTooLarge {
                limit: limits.unzipped,
            });
        }
        unzipped_size += read;
    }
    Ok(Package {
        module_name,
        module,
        unzipped_size,
    })
}

/// A name that stays inside the package: relative, no `..` component, no backslash (a
/// Windows separator that could hide one) and no NUL.
fn is_plain_relative(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('/')
        && !name.contains(['\\', '\0'])
        && !name.split('/').any(|component| component == "..")
}

fn is_wasm(name: &str) -> bool {
    let len = name.len();
    len > 5 && name.is_char_boundary(len - 5) && name[len - 5..].eq_ignore_ascii_case(".wasm")
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use std::io::Write;
    use zip::write::SimpleFileOptions;
    use zip::{CompressionMethod, ZipWriter};

    /// A ZIP of `(name, contents)` entries, deflated.
    pub fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        let options = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        for (name, contents) in entries {
            if let Some(dir) = name.strip_suffix('/') {
                writer.add_directory(dir, options).unwrap();
            } else {
                writer.start_file(*name, options).unwrap();
                writer.write_all(contents).unwrap();
            }
        }
        writer.finish().unwrap().into_inner()
    }

    const WASM: &[u8] = b"\0asm\x01\0\0\0";

    fn small() -> Limits {
        Limits {
            zipped: 1 << 20,
            unzipped: 1 << 20,
            entries: 8,
        }
    }

    #[test]
    fn finds_the_single_module_anywhere() {
        let zip = zip_of(&[
            ("README.txt", b"notes"),
            ("lib/", b""),
            ("lib/fn.WASM", WASM),
        ]);
        let package = extract_module(&zip, &Limits::default()).unwrap();
        assert_eq!(package.module_name, "lib/fn.WASM");
        assert_eq!(package.module, WASM);
        assert_eq!(package.unzipped_size, 5 + WASM.len() as u64);
    }

    #[test]
    fn refuses_empty_and_garbage() {
        for bytes in [&b""[..], &zip_of(&[])] {
            let err = extract_module(bytes, &small()).unwrap_err();
            assert_eq!(err.to_string(), "Uploaded file must be a non-empty zip");
        }
        let err = extract_module(b"this is not a zip file", &small()).unwrap_err();
        assert!(matches!(err, PackageError::InvalidZip { .. }), "{err:?}");
        assert!(
            err.to_string()
                .starts_with("Could not unzip uploaded file."),
            "{err}"
        );
        // A truncated archive.
        let zip = zip_of(&[("fn.wasm", WASM)]);
        let err = extract_module(&zip[..zip.len() - 10], &small()).unwrap_err();
        assert!(matches!(err, PackageError::InvalidZip { .. }), "{err:?}");
    }

    #[test]
    fn detects_corrupt_contents_by_checksum() {
        let mut zip = zip_of(&[("fn.wasm", &[7u8; 4096])]);
        // The deflated data starts after the 30-byte local header and the name.
        zip[30 + "fn.wasm".len() + 2] ^= 0x55;
        let err = extract_module(&zip, &small()).unwrap_err();
        assert!(matches!(err, PackageError::InvalidZip { .. }), "{err:?}");
    }

    #[test]
    fn reads_stored_entries_and_refuses_other_methods() {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        let stored = SimpleFileOptions::default().compression_method(CompressionMethod::Stored);
        writer.start_file("fn.wasm", stored).unwrap();
        writer.write_all(WASM).unwrap();
        let mut zip = writer.finish().unwrap().into_inner();
        assert_eq!(extract_module(&zip, &small()).unwrap().module, WASM);
        // Say the entry is bzip2 (method 12), which this build does not decompress.
        let central = zip.windows(4).position(|w| w == b"PK\x01\x02").unwrap();
        zip[8] = 12;
        zip[central + 10] = 12;
        let err = extract_module(&zip, &small()).unwrap_err();
        assert!(matches!(err, PackageError::InvalidZip { .. }), "{err:?}");
    }

    #[test]
    fn refuses_modules_missing_or_several() {
        let zip = zip_of(&[("index.js", b"exports.handler = 1"), ("wasm/", b"")]);
        assert_eq!(extract_module(&zip, &small()), Err(PackageError::NoModule));
        let zip = zip_of(&[("a.wasm", WASM), ("b/c.wasm", WASM)]);
        let err = extract_module(&zip, &small()).unwrap_err();
        assert_eq!(
            err,
            PackageError::SeveralModules {
                names: vec!["a.wasm".into(), "b/c.wasm".into()]
            }
        );
        assert!(
            err.to_string().contains("it has 2: a.wasm, b/c.wasm"),
            "{err}"
        );
    }

    #[test]
    fn refuses_names_that_leave_the_package() {
        for name in [
            "../fn.wasm",
            "a/../../fn.wasm",
            "a/..",
            "/etc/fn.wasm",
            "a\\..\\fn.wasm",
            "fn.wasm\0.txt",
        ] {
            let zip = zip_of(&[(name, WASM)]);
            assert_eq!(
                extract_module(&zip, &small()),
                Err(PackageError::Traversal { name: name.into() }),
                "{name:?}"
            );
        }
        // Dots inside names are fine.
        let zip = zip_of(&[("a/..b/fn..wasm", WASM)]);
        assert!(extract_module(&zip, &small()).is_ok());
    }

    #[test]
    fn enforces_the_zipped_size_and_entry_count() {
        let zip = zip_of(&[("fn.wasm", WASM)]);
        let limits = Limits {
            zipped: zip.len() as u64 - 1,
            ..small()
        };
        assert_eq!(
            extract_module(&zip, &limits),
            Err(PackageError::TooLarge {
                size: zip.len() as u64,
                limit: limits.zipped
            })
        );
        let names: Vec<String> = (0..9).map(|i| format!("f{i}")).collect();
        let mut entries: Vec<(&str, &[u8])> =
            names.iter().map(|n| (n.as_str(), &b""[..])).collect();
        entries.push(("fn.wasm", WASM));
        let err = extract_module(&zip_of(&entries), &small()).unwrap_err();
        assert_eq!(
            err,
            PackageError::TooManyEntries {
                count: 10,
                limit: 8
            }
        );
    }

    #[test]
    fn counts_decompressed_bytes_up_to_the_limit_exactly() {
        let limits = small();
        let filler = vec![0u8; (limits.unzipped as usize) - WASM.len()];
        let zip = zip_of(&[("fn.wasm", WASM), ("zeros", &filler)]);
        assert_eq!(
            extract_module(&zip, &limits).unwrap().unzipped_size,
            limits.unzipped
        );
        let filler = vec![0u8; filler.len() + 1];
        let zip = zip_of(&[("fn.wasm", WASM), ("zeros", &filler)]);
        assert_eq!(
            extract_module(&zip, &limits),
            Err(PackageError::UnzippedTooLarge {
                limit: limits.unzipped
            })
        );
    }

    #[test]
    fn stops_zip_bombs_spread_over_entries() {
        // 16 entries of 128 KiB zeros each compress to almost nothing; together they pass
        // the 1 MiB limit half-way.
        let zeros = vec![0u8; 128 << 10];
        let names: Vec<String> = (0..16).map(|i| format!("z{i}")).collect();
        let mut entries: Vec<(&str, &[u8])> = vec![("fn.wasm", WASM)];
        entries.extend(names.iter().map(|n| (n.as_str(), &zeros[..])));
        let zip = zip_of(&entries);
        assert!(zip.len() < 64 << 10, "{}", zip.len());
        let limits = Limits {
            entries: 100,
            ..small()
        };
        assert_eq!(
            extract_module(&zip, &limits),
            Err(PackageError::UnzippedTooLarge {
                limit: limits.unzipped
            })
        );
    }

    /// Rewrites the uncompressed size of the archive's only entry, in its local header and
    /// in the central directory, as a zip bomb would.
    fn lie_about_size(zip: &mut [u8], size: u32) {
        assert_eq!(&zip[..4], b"PK\x03\x04");
        zip[22..26].copy_from_slice(&size.to_le_bytes());
        let central = zip
            .windows(4)
            .position(|w| w == b"PK\x01\x02")
            .expect("central directory");
        zip[central + 24..central + 28].copy_from_slice(&size.to_le_bytes());
    }

    #[test]
    fn does_not_trust_declared_sizes() {
        // 8 MiB of zeros whose headers claim 8 bytes: refused as soon as the decompressor
        // passes the claimed size (the zip crate checks that; the running total against
        // the limit, tested above, is the second line).
        let zeros = vec![0u8; 8 << 20];
        let mut zip = zip_of(&[("fn.wasm", &zeros)]);
        lie_about_size(&mut zip, 8);
        let err = extract_module(&zip, &small()).unwrap_err();
        assert!(matches!(err, PackageError::InvalidZip { .. }), "{err:?}");
        assert!(err.to_string().contains("declared"), "{err}");
        // Claiming more than it holds does not make an archive too large: the size is what
        // comes out of the decompressor.
        let mut zip = zip_of(&[("fn.wasm", WASM)]);
        lie_about_size(&mut zip, u32::MAX - 1);
        let package = extract_module(&zip, &small()).unwrap();
        assert_eq!(package.unzipped_size, WASM.len() as u64);
    }
}
