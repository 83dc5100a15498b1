//! The kernel modules a worker loads, with their dependencies. Debian's kernel package
//! has no `modules.dep` (depmod writes it when the package is installed), so each
//! module's dependencies are read from its own `.modinfo` ELF section (`depends=`).

use anyhow::{bail, Context, Result};
use object::read::elf::ElfFile64;
use object::{Object, ObjectSection};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The modules emberd needs besides the NICs: KVM for its micro-VMs, AF_VSOCK over
/// virtio for the worker API inside a VM, and the virtio PCI transport.
const BASE: &[&str] = &[
    "kvm",
    "kvm_intel",
    "kvm_amd",
    "vsock",
    "vmw_vsock_virtio_transport",
    "virtio_pci",
];

/// The NIC drivers, for `net=` (docs/worker-image.md): QEMU's and clouds' virtio, QEMU's
/// default e1000/e1000e, Intel's 1, 10 and 40 GbE server NICs and Realtek's common 1 GbE
/// one. A kernel without one of them (a custom `--kernel`) builds an image without it
/// rather than failing: a machine only needs its own.
pub const NICS: &[&str] = &[
    "virtio_net",
    "e1000",
    "e1000e",
    "igb",
    "ixgbe",
    "i40e",
    "r8169",
];

/// The modules packed by default: [`BASE`], then the [`NICS`].
pub fn default_set() -> impl Iterator<Item = &'static str> {
    BASE.iter().chain(NICS).copied()
}

/// One module to pack, uncompressed.
pub struct Module {
    pub name: String,
    /// Its path under `/lib/modules/RELEASE`, always ending in `.ko`.
    pub path: String,
    pub bytes: Vec<u8>,
    /// The modules it needs loaded first (their names).
    pub depends: Vec<String>,
}

/// Module names use `_` where file names may use `-` (`kvm-intel.ko` is `kvm_intel`).
fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// Every module file under `dir/kernel`, by module name.
fn index(dir: &Path) -> Result<HashMap<String, PathBuf>> {
    let mut found = HashMap::new();
    let mut stack = vec![dir.join("kernel")];
    while let Some(d) = stack.pop() {
        for entry in fs::read_dir(&d).with_context(|| format!("reading {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let file = path.file_name().unwrap_or_default().to_string_lossy();
            if let Some(stem) = file
                .strip_suffix(".ko")
                .or_else(|| file.strip_suffix(".ko.xz"))
            {
                found.insert(normalize(stem), path.clone());
            }
        }
    }
    Ok(found)
}

/// The modules the kernel has built in (`modules.builtin`), which need no loading.
fn builtin(dir: &Path) -> Result<HashSet<String>> {
    let path = dir.join("modules.builtin");
    let text = match fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    Ok(text
        .lines()
        .filter_map(|l| l.rsplit('/').next()?.strip_suffix(".ko"))
        .map(normalize)
        .collect())
}

fn read_module(path: &Path) -> Result<Vec<u8>> {
    let raw = fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    if path.extension().is_some_and(|e| e == "xz") {
        let mut out = Vec::new();
        liblzma::read::XzDecoder::new(&raw[..])
            .read_to_end(&mut out)
            .with_context(|| format!("decompressing {}", path.display()))?;
        return Ok(out);
    }
    Ok(raw)
}

/// The `depends=` list of a module's `.modinfo` section.
fn depends(name: &str, bytes: &[u8]) -> Result<Vec<String>> {
    let elf = ElfFile64::<object::Endianness>::parse(bytes)
        .with_context(|| format!("module {name} is not an ELF64 object"))?;
    let section = elf
        .section_by_name(".modinfo")
        .with_context(|| format!("module {name} has no .modinfo section"))?;
    let data = section.data()?;
    Ok(data
        .split(|&b| b == 0)
        .filter_map(|field| field.strip_prefix(b"depends="))
        .flat_map(|list| {
            String::from_utf8_lossy(list)
                .split(',')
                .map(normalize)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .collect())
}

/// The modules `wanted` and everything they depend on, dependencies before dependents
/// (the order to load them in). Built-in modules are left out; a module that is neither
/// built in nor in `dir` is an error, unless it is one of the [`NICS`], which is left out.
pub fn resolve(dir: &Path, wanted: &[String]) -> Result<Vec<Module>> {
    let files = index(dir)?;
    let builtin = builtin(dir)?;
    let mut loaded: BTreeMap<String, Module> = BTreeMap::new();
    let mut order = Vec::new();
    for name in wanted {
        visit(
            &normalize(name),
            &files,
            &builtin,
            &mut loaded,
            &mut order,
            &mut Vec::new(),
            dir,
        )?;
    }
    Ok(order
        .into_iter()
        .filter_map(|n| loaded.remove(&n))
        .collect())
}

/// Depth-first: a module's dependencies are pushed to `order` before it. `path` is the
/// chain being visited, to report a dependency cycle instead of recursing forever.
fn visit(
    name: &str,
    files: &HashMap<String, PathBuf>,
    builtin: &HashSet<String>,
    loaded: &mut BTreeMap<String, Module>,
    order: &mut Vec<String>,
    path: &mut Vec<String>,
    dir: &Path,
) -> Result<()> {
    if loaded.contains_key(name) || builtin.contains(name) {
        return Ok(());
    }
    if path.iter().any(|p| p == name) {
        bail!("module dependency cycle: {} -> {name}", path.join(" -> "));
    }
    let Some(file) = files.get(name) else {
        if path.is_empty() && NICS.contains(&name) {
            eprintln!(
                "ember-image: no NIC driver {name} in {}; the image goes without it",
                dir.display()
            );
            return Ok(());
        }
        bail!(
            "module {name} is neither built into the kernel nor in {}",
            dir.display()
        );
    };
    let bytes = read_module(file)?;
    let deps = depends(name, &bytes)?;
    path.push(name.to_owned());
    for dep in &deps {
        visit(dep, files, builtin, loaded, order, path, dir)?;
    }
    path.pop();
    let rel = file.strip_prefix(dir).unwrap_or(file).to_string_lossy();
    let rel = rel.strip_suffix(".xz").unwrap_or(&rel).to_owned();
    loaded.insert(
        name.to_owned(),
        Module {
            name: name.to_owned(),
            path: rel,
            bytes,
            depends: deps,
        },
    );
    order.push(name.to_owned());
    Ok(())
}

/// `modules.dep` in depmod's format: each module's path, then every module it needs
/// (transitively), the ones to load last first.
pub fn modules_dep(modules: &[Module]) -> String {
    let by_name: HashMap<&str, &Module> = modules.iter().map(|m| (m.name.as_str(), m)).collect();
    let position: HashMap<&str, usize> = modules
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.as_str(), i))
        .collect();
    let mut out = String::new();
    for module in modules {
        let mut needed = HashSet::new();
        let mut stack: Vec<&str> = module.depends.iter().map(String::as_str).collect();
        while let Some(dep) = stack.pop() {
            if let Some(m) = by_name.get(dep) {
                if needed.insert(dep) {
                    stack.extend(m.depends.iter().map(String::as_str));
                }
            }
        }
        let mut needed: Vec<&str> = needed.into_iter().collect();
        needed.sort_by_key(|n| std::cmp::Reverse(position[n]));
        out.push_str(&module.path);
        out.push(':');
        for dep in needed {
            out.push(' ');
            out.push_str(&by_name[dep].path);
        }
        out.push('\n');
    }
    out
}

/// `modules.order`: every module's path, in load order.
pub fn modules_order(modules: &[Module]) -> String {
    modules.iter().map(|m| format!("{}\n", m.path)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str]) -> Module {
        Module {
            name: name.into(),
            path: format!("kernel/{name}.ko"),
            bytes: Vec::new(),
            depends: depends.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn modules_dep_lists_the_transitive_closure_last_loaded_first() {
        // Load order: irqbypass, kvm, kvm_intel; vsock, transport_common, transport.
        let modules = [
            module("irqbypass", &[]),
            module("kvm", &["irqbypass"]),
            module("kvm_intel", &["kvm"]),
            module("vsock", &[]),
            module("common", &["vsock"]),
            module("transport", &["common", "vsock"]),
        ];
        assert_eq!(
            modules_dep(&modules),
            "kernel/irqbypass.ko:\n\
             kernel/kvm.ko: kernel/irqbypass.ko\n\
             kernel/kvm_intel.ko: kernel/kvm.ko kernel/irqbypass.ko\n\
             kernel/vsock.ko:\n\
             kernel/common.ko: kernel/vsock.ko\n\
             kernel/transport.ko: kernel/common.ko kernel/vsock.ko\n"
        );
        assert_eq!(modules_order(&modules).lines().count(), 6);
    }

    #[test]
    fn a_missing_nic_driver_is_left_out_and_any_other_module_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("kernel")).unwrap();
        let nics: Vec<String> = NICS.iter().map(|n| n.to_string()).collect();
        assert!(resolve(dir.path(), &nics).unwrap().is_empty());
        let err = resolve(dir.path(), &["kvm".to_owned()]).err().unwrap();
        assert!(err.to_string().contains("module kvm is neither"), "{err}");
    }
}
