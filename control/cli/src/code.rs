//! A function's deployment package from the command line: a ZIP as given, or a bare `.wasm`
//! module zipped in memory (the service takes only ZIPs, like Lambda).

use std::io::{Cursor, Write};
use std::path::{Path, PathBuf};

use zip::write::SimpleFileOptions;
use zip::{CompressionMethod, DateTime, ZipWriter};

use super::error::CliError;

/// `--zip F | --wasm F`: exactly one is required.
#[derive(Clone, Debug, clap::Args)]
#[group(required = true, multiple = false)]
pub struct CodeArgs {
    /// A deployment package: a ZIP holding one .wasm module
    #[arg(long, value_name = "FILE")]
    pub zip: Option<PathBuf>,
    /// A WebAssembly module, zipped before upload
    #[arg(long, value_name = "FILE")]
    pub wasm: Option<PathBuf>,
}

impl CodeArgs {
    /// The ZIP to upload.
    pub fn package(&self) -> Result<Vec<u8>, CliError> {
        let read = |path: &Path| std::fs::read(path).map_err(|e| CliError::file(path, e));
        match (&self.zip, &self.wasm) {
            (Some(zip), _) => read(zip),
            (None, Some(wasm)) => Ok(zip_module(&entry_name(wasm), &read(wasm)?)),
            (None, None) => unreachable!("clap requires --zip or --wasm"),
        }
    }
}

/// The module's name inside the ZIP: its file name, ending in `.wasm` as the service
/// requires.
fn entry_name(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "function".to_owned());
    if name.ends_with(".wasm") {
        name
    } else {
        format!("{name}.wasm")
    }
}

/// A deflated ZIP holding `module` as `name`. The timestamp is fixed, so the same module
/// always gives the same ZIP and the same `CodeSha256`.
pub(super) fn zip_module(name: &str, module: &[u8]) -> Vec<u8> {
    let options = SimpleFileOptions::default()
        .compression_method(CompressionMethod::Deflated)
        .last_modified_time(DateTime::default())
        .unix_permissions(0o644);
    let zip = || -> zip::result::ZipResult<Vec<u8>> {
        let mut writer = ZipWriter::new(Cursor::new(Vec::new()));
        writer.start_file(name, options)?;
        writer.write_all(module)?;
        Ok(writer.finish()?.into_inner())
    };
    zip().expect("zipping into memory cannot fail")
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::package::{extract_module, Limits};

    #[test]
    fn zips_a_module_the_service_accepts_deterministically() {
        let zip = zip_module("hello.wasm", ember_examples::HELLO);
        let package = extract_module(&zip, &Limits::default()).unwrap();
        assert_eq!(package.module_name, "hello.wasm");
        assert_eq!(package.module, ember_examples::HELLO);
        assert_eq!(zip, zip_module("hello.wasm", ember_examples::HELLO));
    }

    #[test]
    fn module_names_end_in_wasm() {
        assert_eq!(entry_name(Path::new("/x/hello.wasm")), "hello.wasm");
        assert_eq!(entry_name(Path::new("build/out")), "out.wasm");
    }
}
