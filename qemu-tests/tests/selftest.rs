//! The image's self-test under QEMU: booted directly (`-kernel`/`-initrd`) and from its
//! GPT disk through UEFI firmware, it boots a micro-VM on the machine's own `/dev/kvm`,
//! runs a sample function, prints `ember-selftest: ok` and powers the machine off; on a
//! CPU without virtualization it says why it failed.

use std::time::Duration;

use qemu_tests::image::Image;
use qemu_tests::qemu::{Boot, Qemu};

/// Under TCG the kernel boots in tens of seconds and the micro-VM, nested in emulation,
/// takes longer still.
const SELFTEST: Duration = Duration::from_secs(900);

fn selftest_image(dir: &std::path::Path) -> Image {
    Image::build(dir, &["--selftest"])
}

/// Boots `image` directly on a CPU of QEMU's model `cpu`.
fn boot_direct(image: &Image, cpu: &str) -> Qemu {
    let (kernel, initrd, cmdline) = (image.kernel(), image.initrd(), image.cmdline());
    let boot = Boot::Direct {
        kernel: &kernel,
        initrd: &initrd,
        cmdline: &cmdline,
    };
    Qemu::start(boot, cpu)
}

fn expect_ok_then_power_off(mut qemu: Qemu) {
    let line = qemu.wait_for("ember-selftest:", SELFTEST);
    assert!(
        line.contains("ember-selftest: ok"),
        "{line}\nconsole:\n{}",
        qemu.tail()
    );
    let status = qemu.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "QEMU ended with {status}");
}

#[test]
fn direct_boot_passes_the_selftest_and_powers_off() {
    let dir = tempfile::tempdir().unwrap();
    let image = selftest_image(dir.path());
    expect_ok_then_power_off(boot_direct(&image, "max"));
}

#[test]
fn uefi_boot_of_the_disk_image_passes_the_selftest() {
    let dir = tempfile::tempdir().unwrap();
    let image = selftest_image(dir.path());
    let disk = image.disk();
    expect_ok_then_power_off(Qemu::start(Boot::Uefi { disk: &disk }, "max"));
}

#[test]
fn without_virtualization_the_selftest_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let image = selftest_image(dir.path());
    let mut qemu = boot_direct(&image, "max,-svm,-vmx");
    let line = qemu.wait_for("ember-selftest:", SELFTEST);
    assert!(
        line.contains("ember-selftest: FAILED") && line.contains("kvm"),
        "{line}\nconsole:\n{}",
        qemu.tail()
    );
    qemu.wait_exit(Duration::from_secs(120));
}
