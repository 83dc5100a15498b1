//! Networking in init mode under QEMU: with `ember.net=dhcp` on the kernel command line
//! and a virtio NIC on QEMU's restricted user-mode network, emberd asks QEMU's built-in
//! DHCP server (10.0.2.2) for an address, gets 10.0.2.15/24 and says so, then the
//! self-test runs and powers off; nothing leaves QEMU. Without a NIC, configured
//! networking is a fatal error that names the problem.

use std::sync::OnceLock;
use std::time::Duration;

use qemu_tests::image::Image;
use qemu_tests::qemu::{Boot, Machine};

/// The kernel boots in seconds under TCG; the self-test's micro-VM takes longer.
const BOOT: Duration = Duration::from_secs(600);

/// A self-test image (it powers off after its line), built once per test process.
fn image() -> &'static Image {
    static IMAGE: OnceLock<Image> = OnceLock::new();
    IMAGE.get_or_init(|| {
        let dir = ember_testkit::binaries::profile_dir().join("qemu-tests/network-image");
        Image::build(&dir, &["--selftest"])
    })
}

/// The image's direct boot with `extra` appended to its command line.
fn direct_boot_with(extra: &str) -> Boot {
    match image().direct() {
        Boot::Direct {
            kernel,
            initrd,
            cmdline,
        } => Boot::Direct {
            kernel,
            initrd,
            cmdline: format!("{cmdline} {extra}"),
        },
        Boot::Uefi { .. } => unreachable!("Image::direct is a direct boot"),
    }
}

#[test]
fn dhcp_configures_the_nic_from_qemu_s_server() {
    let mut qemu = Machine::new(direct_boot_with("ember.net=dhcp"))
        .restricted_nic()
        .start();
    let clock = qemu.wait_for("emberd: clock:", BOOT);
    assert!(
        clock.contains(" UTC, set by the kernel from the hardware clock rtc0"),
        "{clock}"
    );
    let line = qemu.wait_for("emberd: network:", BOOT);
    assert!(
        line.contains("emberd: network: eth0 is 10.0.2.15/24, ")
            && line.contains("(DHCP from 10.0.2.2 in "),
        "{line}\nconsole:\n{}",
        qemu.tail()
    );
    eprintln!("{line}");
    let selftest = qemu.wait_for("ember-selftest:", BOOT);
    assert!(selftest.contains("ember-selftest: ok"), "{selftest}");
    let status = qemu.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "QEMU ended with {status}");
}

#[test]
fn configured_networking_without_a_nic_is_fatal() {
    let mut qemu = Machine::new(direct_boot_with("ember.net=dhcp ember.fatal_delay=0")).start();
    let line = qemu.wait_for("emberd: fatal:", BOOT);
    assert_eq!(
        line.trim(),
        "emberd: fatal: network: no network interface after 10s (is its driver among the image's modules?)",
        "console:\n{}",
        qemu.tail()
    );
    let status = qemu.wait_exit(Duration::from_secs(120));
    assert!(status.success(), "QEMU ended with {status}");
}
