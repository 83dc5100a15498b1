//! Builds a real image (Debian's kernel, the static emberd, systemd's stub; downloads are
//! cached in target/ember-image-cache) and reads every artifact back with independent
//! parsers: the cpio archive, the modules and their dependencies, the GPT, the FAT file
//! system, the UKI's PE sections and the manifest's hashes.

use ember_image::{build, config, kernel, manifest::Manifest, modules, Options};
use object::read::elf::{ElfFile64, ProgramHeader};
use object::read::pe::PeFile64;
use object::{Object, ObjectSection};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::OnceLock;

const TOKEN: &str = "ember-bootstrap-test-token";
const CA: &str = "-----BEGIN CERTIFICATE-----\ntest\n-----END CERTIFICATE-----\n";

struct Built {
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    manifest: Manifest,
}

/// One image for all the checks: building takes a while the first time.
fn image() -> &'static Built {
    static IMAGE: OnceLock<Built> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, CA).unwrap();
        let out = dir.path().join("image");
        let options = Options {
            out: out.clone(),
            cache: ember_image::workspace_dir().join("target/ember-image-cache"),
            kernel: kernel::Source::Debian,
            emberd: None,
            modules: modules::default_set().map(str::to_owned).collect(),
            settings: config::Settings {
                control: Some("vsock://2:9444".into()),
                ca: true,
                token: Some(TOKEN.into()),
                name: Some("image-test".into()),
                ..config::Settings::default()
            },
            ca: Some(ca),
            selftest: true,
        };
        let manifest = build(&options).unwrap();
        Built {
            _dir: dir,
            out,
            manifest,
        }
    })
}

fn read(name: &str) -> Vec<u8> {
    std::fs::read(image().out.join(name)).unwrap()
}

/// The initramfs's entries: path → (mode, contents).
fn initramfs() -> BTreeMap<String, (u32, Vec<u8>)> {
    let mut cpio = Vec::new();
    flate2::read::GzDecoder::new(&read("initramfs.img")[..])
        .read_to_end(&mut cpio)
        .unwrap();
    let mut entries = BTreeMap::new();
    let mut rest = &cpio[..];
    loop {
        let mut reader = cpio::NewcReader::new(rest).unwrap();
        if reader.entry().is_trailer() {
            break;
        }
        let name = reader.entry().name().to_owned();
        let mode = reader.entry().mode();
        let mut data = Vec::new();
        reader.read_to_end(&mut data).unwrap();
        rest = reader.finish().unwrap();
        entries.insert(name, (mode, data));
    }
    entries
}

#[test]
fn manifest_matches_every_file() {
    let built = image();
    let names: Vec<&str> = built
        .manifest
        .files
        .iter()
        .map(|f| f.name.as_str())
        .collect();
    assert_eq!(names, ["vmlinuz", "initramfs.img", "cmdline", "worker.img"]);
    let on_disk: Manifest =
        serde_json::from_slice(&read("manifest.json")).expect("manifest.json parses");
    for file in &on_disk.files {
        let bytes = read(&file.name);
        assert_eq!(file.size, bytes.len() as u64, "{}", file.name);
        assert_eq!(
            file.sha256,
            hex::encode(Sha256::digest(&bytes)),
            "{}",
            file.name
        );
        assert!(!file.version.is_empty());
    }
    assert!(on_disk.kernel_release.ends_with("-amd64"));
    assert_eq!(on_disk.files[0].version, on_disk.kernel_version);
}

#[test]
fn cmdline_asks_for_the_selftest_and_holds_no_secret() {
    let cmdline = String::from_utf8(read("cmdline")).unwrap();
    assert_eq!(cmdline, "console=tty0 console=ttyS0 ember.selftest=1\n");
}

#[test]
fn init_is_a_static_executable() {
    let entries = initramfs();
    let (mode, init) = &entries["init"];
    assert_eq!(mode & 0o170000, 0o100000, "a regular file");
    assert_eq!(mode & 0o777, 0o755);
    let elf = ElfFile64::<object::Endianness>::parse(&init[..]).expect("ELF64");
    let endian = elf.endian();
    let interp = elf
        .elf_program_headers()
        .iter()
        .any(|ph| ph.p_type(endian) == object::elf::PT_INTERP);
    assert!(!interp, "/init must be static (no PT_INTERP)");
}

#[test]
fn config_file_holds_the_settings_and_the_ca() {
    let entries = initramfs();
    let (mode, conf) = &entries["etc/ember/emberd.conf"];
    assert_eq!(mode & 0o777, 0o600, "the token is readable by root only");
    let conf = String::from_utf8(conf.clone()).unwrap();
    assert!(
        conf.lines().any(|l| l == format!("token = {TOKEN}")),
        "{conf}"
    );
    assert!(
        conf.lines().any(|l| l == "ca = /etc/ember/ca.pem"),
        "{conf}"
    );
    assert!(
        conf.lines().any(|l| l == "control = vsock://2:9444"),
        "{conf}"
    );
    assert_eq!(entries["etc/ember/ca.pem"].1, CA.as_bytes());
}

#[test]
fn initramfs_holds_nothing_else() {
    let release = &image().manifest.kernel_release;
    let modules = format!("lib/modules/{release}/");
    for (name, (mode, _)) in initramfs() {
        let allowed = mode & 0o170000 == 0o040000
            || name == "init"
            || name == "dev/console"
            || name.starts_with("etc/ember/")
            || name.starts_with(&modules);
        assert!(allowed, "unexpected entry {name}");
    }
}

/// The `depends=` of a module, read straight from its ELF `.modinfo`.
fn depends_of(ko: &[u8]) -> Vec<String> {
    let elf = ElfFile64::<object::Endianness>::parse(ko).unwrap();
    let modinfo = elf.section_by_name(".modinfo").unwrap();
    modinfo
        .data()
        .unwrap()
        .split(|&b| b == 0)
        .filter_map(|f| f.strip_prefix(b"depends="))
        .flat_map(|l| {
            String::from_utf8_lossy(l)
                .split(',')
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .filter(|d| !d.is_empty())
        .map(|d| d.replace('-', "_"))
        .collect()
}

#[test]
fn modules_and_their_dependencies_are_present_in_load_order() {
    let entries = initramfs();
    let dir = format!("lib/modules/{}/", image().manifest.kernel_release);
    let order = String::from_utf8(entries[&format!("{dir}modules.order")].1.clone()).unwrap();
    let order: Vec<&str> = order.lines().collect();
    let name_of = |path: &str| {
        path.rsplit('/')
            .next()
            .unwrap()
            .trim_end_matches(".ko")
            .replace('-', "_")
    };
    let names: Vec<String> = order.iter().map(|p| name_of(p)).collect();
    for wanted in [
        "kvm",
        "kvm_intel",
        "kvm_amd",
        "vsock",
        "vmw_vsock_virtio_transport",
        "virtio_pci",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    for (i, path) in order.iter().enumerate() {
        let (mode, ko) = &entries[&format!("{dir}{path}")];
        assert_eq!(mode & 0o777, 0o644);
        for dep in depends_of(ko) {
            let at = names.iter().position(|n| *n == dep);
            assert!(
                at.is_some_and(|at| at < i),
                "{path} needs {dep}, which is not loaded before it"
            );
        }
    }
    let dep = String::from_utf8(entries[&format!("{dir}modules.dep")].1.clone()).unwrap();
    assert_eq!(dep.lines().count(), order.len());
    for line in dep.lines() {
        for path in line.split([':', ' ']).filter(|p| !p.is_empty()) {
            assert!(
                entries.contains_key(&format!("{dir}{path}")),
                "modules.dep names {path}"
            );
        }
    }
    assert!(
        dep.contains("kvm-intel.ko: kernel/arch/x86/kvm/kvm.ko"),
        "{dep}"
    );
}

/// The UKI, read back from the ESP of worker.img.
fn uki() -> Vec<u8> {
    let path = image().out.join("worker.img");
    let disk = gpt::GptConfig::new()
        .open(&path)
        .expect("worker.img has a GPT");
    let parts: Vec<_> = disk.partitions().values().cloned().collect();
    assert_eq!(parts.len(), 1);
    assert_eq!(parts[0].part_type_guid, gpt::partition_types::EFI);
    let block = 512;
    let start = parts[0].first_lba * block;
    let len = (parts[0].last_lba + 1) * block - start;
    let mut file = std::fs::File::open(&path).unwrap();
    file.seek(SeekFrom::Start(start)).unwrap();
    let mut esp = vec![0; len as usize];
    file.read_exact(&mut esp).unwrap();
    let fs = fatfs::FileSystem::new(std::io::Cursor::new(esp), fatfs::FsOptions::new())
        .expect("the ESP is FAT");
    let mut uki = Vec::new();
    fs.root_dir()
        .open_file("EFI/BOOT/BOOTX64.EFI")
        .expect("\\EFI\\BOOT\\BOOTX64.EFI")
        .read_to_end(&mut uki)
        .unwrap();
    uki
}

#[test]
fn disk_boots_a_well_formed_unified_kernel_image() {
    let uki = uki();
    let pe = PeFile64::parse(&uki[..]).expect("BOOTX64.EFI is PE32+");
    let opt = pe.nt_headers().optional_header;
    let le = object::LittleEndian;
    let (section_align, file_align) = (
        u64::from(opt.section_alignment.get(le)),
        u64::from(opt.file_alignment.get(le)),
    );
    let added = [".osrel", ".cmdline", ".initrd", ".linux"];
    let mut ranges = Vec::new();
    for section in pe.section_table().iter() {
        let name = std::str::from_utf8(section.raw_name()).unwrap();
        let va = u64::from(section.virtual_address.get(le));
        let size = u64::from(section.virtual_size.get(le));
        let raw = u64::from(section.pointer_to_raw_data.get(le));
        let raw_size = u64::from(section.size_of_raw_data.get(le));
        if added.contains(&name) {
            // (Debian's stub has its own .sdmagic off SectionAlignment; it is as shipped.)
            assert_eq!(
                va % section_align.max(4096),
                0,
                "{name} at {va:#x} misaligned"
            );
            assert_eq!(raw % file_align, 0, "{name}'s data misaligned");
        }
        assert!(raw + raw_size <= uki.len() as u64);
        // A loader maps VirtualSize bytes (Debian's stub pads .sbat's file data over .sdmagic).
        assert!(va + size <= u64::from(opt.size_of_image.get(le)));
        ranges.push((va, va + size));
    }
    ranges.sort();
    for pair in ranges.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "sections overlap: {pair:?}");
    }
    let section = |name: &str| {
        let s = pe
            .section_by_name(name)
            .unwrap_or_else(|| panic!("no {name} section"));
        let data = s.data().unwrap();
        data[..s.size() as usize].to_vec()
    };
    assert!(
        pe.section_by_name(".text").is_some(),
        "the stub's code is kept"
    );
    assert_eq!(section(".linux"), read("vmlinuz"));
    assert_eq!(section(".initrd"), read("initramfs.img"));
    assert_eq!(
        String::from_utf8(section(".cmdline")).unwrap() + "\n",
        String::from_utf8(read("cmdline")).unwrap()
    );
    assert!(String::from_utf8(section(".osrel"))
        .unwrap()
        .contains("ID=ember\n"));
}

#[test]
fn a_repeat_build_is_fast_and_identical() {
    let first = image();
    let dir = tempfile::tempdir().unwrap();
    let started = std::time::Instant::now();
    let options = Options {
        out: dir.path().to_owned(),
        cache: ember_image::workspace_dir().join("target/ember-image-cache"),
        kernel: kernel::Source::Debian,
        emberd: None,
        modules: modules::default_set().map(str::to_owned).collect(),
        settings: config::Settings::default(),
        ca: None,
        selftest: false,
    };
    let again = build(&options).unwrap();
    let took = started.elapsed();
    assert_eq!(
        again.files[0].sha256, first.manifest.files[0].sha256,
        "same kernel"
    );
    assert!(Path::new(&dir.path().join("worker.img")).exists());
    assert!(took.as_secs() < 120, "a cached build took {took:?}");
}
