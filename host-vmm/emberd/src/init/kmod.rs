//! Kernel modules: the load order from `modules.dep` (dependencies first, each module
//! once, a cycle refused) and loading with `finit_module(2)`, or `init_module(2)` after
//! decompressing a `.ko.xz` or `.ko.zst` in userspace, which works whether or not the
//! kernel was built with in-kernel module decompression.

use std::collections::{BTreeMap, HashSet};
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::kmod::{finit_module, init_module, ModuleInitFlags};

/// One module of `modules.dep`: its file (relative to the modules directory) and the
/// modules it needs, by name.
#[derive(Debug, PartialEq, Eq)]
pub struct Module {
    pub name: String,
    pub path: PathBuf,
    pub deps: Vec<String>,
}

/// Why modules cannot be ordered.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum OrderError {
    #[error("modules.dep line {0}: expected `PATH: DEPENDENCIES`")]
    Syntax(usize),
    #[error("module {0} is not in modules.dep (nor built in)")]
    Unknown(String),
    #[error("modules.dep has a dependency cycle: {}", .0.join(" -> "))]
    Cycle(Vec<String>),
}

/// A module's name from its file name: `kernel/arch/x86/kvm/kvm-amd.ko.xz` → `kvm_amd`
/// (the kernel treats `-` and `_` alike in names).
pub fn module_name(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split_once(".ko").map_or(file, |(stem, _)| stem);
    stem.replace('-', "_")
}

/// The modules listed in `modules.dep`, by name.
pub fn parse_modules_dep(text: &str) -> Result<BTreeMap<String, Module>, OrderError> {
    let mut modules = BTreeMap::new();
    for (index, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let (path, deps) = line.split_once(':').ok_or(OrderError::Syntax(index + 1))?;
        let name = module_name(path.trim());
        modules.insert(
            name.clone(),
            Module {
                name,
                path: PathBuf::from(path.trim()),
                deps: deps.split_whitespace().map(module_name).collect(),
            },
        );
    }
    Ok(modules)
}

/// The modules to load for `wanted`, dependencies before the modules that need them,
/// each once.
pub fn load_order<'a>(
    modules: &'a BTreeMap<String, Module>,
    wanted: &[String],
) -> Result<Vec<&'a Module>, OrderError> {
    let mut order = Vec::new();
    let mut done = HashSet::new();
    for name in wanted {
        visit(
            modules,
            &module_name(name),
            &mut Vec::new(),
            &mut done,
            &mut order,
        )?;
    }
    Ok(order)
}

/// Depth-first: `path` holds the modules being visited, so meeting one again is a cycle.
fn visit<'a>(
    modules: &'a BTreeMap<String, Module>,
    name: &str,
    path: &mut Vec<String>,
    done: &mut HashSet<String>,
    order: &mut Vec<&'a Module>,
) -> Result<(), OrderError> {
    if done.contains(name) {
        return Ok(());
    }
    if path.iter().any(|n| n == name) {
        let mut cycle = path.clone();
        cycle.push(name.to_owned());
        return Err(OrderError::Cycle(cycle));
    }
    let module = modules
        .get(name)
        .ok_or_else(|| OrderError::Unknown(name.to_owned()))?;
    path.push(name.to_owned());
    for dep in &module.deps {
        visit(modules, dep, path, done, order)?;
    }
    path.pop();
    done.insert(name.to_owned());
    order.push(module);
    Ok(())
}

/// The names in `modules.builtin` (modules compiled into the kernel).
pub fn parse_builtin(text: &str) -> HashSet<String> {
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| module_name(line.trim()))
        .collect()
}

/// How loading one module went.
#[derive(Debug)]
pub enum Loaded {
    Now,
    Already,
    /// The kernel found no hardware for it (kvm_intel on an AMD CPU).
    NoDevice,
}

/// Why a module did not load.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("decompressing {}: {reason}", path.display())]
    Decompress { path: PathBuf, reason: String },
    #[error("the kernel refused {}: {errno} ({})", path.display(), errno.desc())]
    Refused { path: PathBuf, errno: Errno },
}

/// Loads the module at `path` (a `.ko`, `.ko.xz` or `.ko.zst`).
pub fn load(path: &Path) -> Result<Loaded, LoadError> {
    let read_error = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let file_name = path.to_string_lossy();
    let result = if file_name.ends_with(".ko") {
        let file = File::open(path).map_err(read_error)?;
        finit_module(&file, c"", ModuleInitFlags::empty())
    } else {
        let mut compressed = Vec::new();
        File::open(path)
            .and_then(|mut file| file.read_to_end(&mut compressed))
            .map_err(read_error)?;
        let image =
            decompress(&file_name, &compressed).map_err(|reason| LoadError::Decompress {
                path: path.to_owned(),
                reason,
            })?;
        init_module(&image, c"")
    };
    match result {
        Ok(()) => Ok(Loaded::Now),
        Err(Errno::EEXIST) => Ok(Loaded::Already),
        Err(Errno::ENODEV) => Ok(Loaded::NoDevice),
        Err(errno) => Err(LoadError::Refused {
            path: path.to_owned(),
            errno,
        }),
    }
}

/// The module image inside a compressed module file, by its extension.
fn decompress(file_name: &str, compressed: &[u8]) -> Result<Vec<u8>, String> {
    let mut image = Vec::new();
    if file_name.ends_with(".xz") {
        lzma_rs::xz_decompress(&mut &compressed[..], &mut image).map_err(|e| e.to_string())?;
    } else if file_name.ends_with(".zst") {
        ruzstd::decoding::StreamingDecoder::new(compressed)
            .map_err(|e| e.to_string())?
            .read_to_end(&mut image)
            .map_err(|e| e.to_string())?;
    } else {
        return Err("not .ko, .ko.xz or .ko.zst".to_owned());
    }
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/arch/x86/kvm/kvm-amd.ko.xz: kernel/arch/x86/kvm/kvm.ko.xz kernel/virt/lib/irqbypass.ko.xz
kernel/arch/x86/kvm/kvm-intel.ko.xz: kernel/arch/x86/kvm/kvm.ko.xz kernel/virt/lib/irqbypass.ko.xz
kernel/arch/x86/kvm/kvm.ko.xz: kernel/virt/lib/irqbypass.ko.xz
kernel/virt/lib/irqbypass.ko.xz:
kernel/net/vmw_vsock/vmw_vsock_virtio_transport.ko: kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vmw_vsock_virtio_transport_common.ko: kernel/net/vmw_vsock/vsock.ko
kernel/net/vmw_vsock/vsock.ko:
";

    fn names(order: &[&Module]) -> Vec<String> {
        order.iter().map(|m| m.name.clone()).collect()
    }

    #[test]
    fn names_come_from_file_names_with_dashes_as_underscores() {
        assert_eq!(module_name("kernel/arch/x86/kvm/kvm-amd.ko.zst"), "kvm_amd");
        assert_eq!(module_name("vsock.ko"), "vsock");
        assert_eq!(module_name("kvm-intel"), "kvm_intel");
    }

    #[test]
    fn dependencies_come_first_and_each_module_once() {
        let modules = parse_modules_dep(DEP).unwrap();
        let wanted =
            ["kvm-amd", "kvm_intel", "vmw_vsock_virtio_transport", "kvm"].map(String::from);
        let order = load_order(&modules, &wanted).unwrap();
        assert_eq!(
            names(&order),
            [
                "irqbypass",
                "kvm",
                "kvm_amd",
                "kvm_intel",
                "vsock",
                "vmw_vsock_virtio_transport_common",
                "vmw_vsock_virtio_transport",
            ]
        );
        assert_eq!(
            order[0].path,
            PathBuf::from("kernel/virt/lib/irqbypass.ko.xz")
        );
    }

    #[test]
    fn cycles_and_unknown_modules_are_refused() {
        let modules = parse_modules_dep("a.ko: b.ko\nb.ko: c.ko\nc.ko: a.ko\n").unwrap();
        assert_eq!(
            load_order(&modules, &["a".into()]),
            Err(OrderError::Cycle(
                ["a", "b", "c", "a"].map(String::from).to_vec()
            ))
        );
        let modules = parse_modules_dep(DEP).unwrap();
        assert_eq!(
            load_order(&modules, &["e1000e".into()]),
            Err(OrderError::Unknown("e1000e".into()))
        );
        assert_eq!(
            parse_modules_dep("no colon here"),
            Err(OrderError::Syntax(1))
        );
    }

    #[test]
    fn builtin_modules_by_name() {
        let builtin = parse_builtin("kernel/drivers/virtio/virtio.ko\nkernel/fs/ext4/ext4.ko\n");
        assert!(builtin.contains("virtio") && builtin.contains("ext4"));
    }

    #[test]
    fn compressed_modules_are_unpacked_by_their_extension() {
        let image = b"\x7fELF a module image".repeat(100);
        let mut xz = Vec::new();
        lzma_rs::xz_compress(&mut &image[..], &mut xz).unwrap();
        assert_eq!(decompress("m.ko.xz", &xz).unwrap(), image);
        let zst = ruzstd::encoding::compress_to_vec(
            &image[..],
            ruzstd::encoding::CompressionLevel::Fastest,
        );
        assert_eq!(decompress("m.ko.zst", &zst).unwrap(), image);
        assert!(decompress("m.ko.zst", &xz).is_err());
        assert!(decompress("m.ko.xz", b"not xz").is_err());
        assert!(decompress("m.ko.gz", &xz).is_err());
    }
}
