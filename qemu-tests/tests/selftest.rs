//! The image's self-test under QEMU: booted directly (`-kernel`/`-initrd`) and from its
//! GPT disk through UEFI firmware, it boots a micro-VM on the machine's own `/dev/kvm`,
//! runs a sample function, prints `ember-selftest: ok` and powers the machine off; on a
//! CPU without virtualization it says why it failed.

use std::sync::OnceLock;
use std::time::Duration;

use qemu_tests::image::Image;
use qemu_tests::qemu::{Machine, Qemu};

/// Under TCG the kernel boots in tens of seconds and the micro-VM, nested in emulation,
/// takes longer still.
const SELFTEST: Duration = Duration::from_secs(900);

/// The self-test image, built once per test process: the boots share it.
fn selftest_image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = ember_testkit::binaries::profile_dir().join("qemu-tests/selftest-image");
        Image::build(&dir, &["--selftest"])
    })
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
    let image = selftest_image();
    expect_ok_then_power_off(Machine::new(image.direct()).start());
}

#[test]
fn uefi_boot_of_the_disk_image_passes_the_selftest() {
    let image = selftest_image();
    expect_ok_then_power_off(Machine::new(image.uefi()).start());
}

#[test]
fn without_virtualization_the_selftest_says_why() {
    let image = selftest_image();
    let mut qemu = Machine::new(image.direct()).cpu("max,-svm,-vmx").start();
    let line = qemu.wait_for("ember-selftest:", SELFTEST);
    assert!(
        line.contains("ember-selftest: FAILED") && line.contains("kvm"),
        "{line}\nconsole:\n{}",
        qemu.tail()
    );
    qemu.wait_exit(Duration::from_secs(120));
}
