//! emberd's configuration in the image: the `key = value` file `/etc/ember/emberd.conf`
//! and the kernel command line, with the keys of docs/worker-image.md.

use anyhow::{bail, Result};

/// Where the file and control's CA sit in the initramfs.
pub const CONF_PATH: &str = "etc/ember/emberd.conf";
pub const CA_PATH: &str = "etc/ember/ca.pem";

/// What goes into the file; `None` leaves emberd's default.
#[derive(Default)]
pub struct Settings {
    pub control: Option<String>,
    /// Set when control's CA is packed into the image.
    pub ca: bool,
    pub token: Option<String>,
    pub name: Option<String>,
    pub on_exit: Option<String>,
    pub listen: Option<String>,
    pub vsock_port: Option<u32>,
    /// Any other key (`--set KEY=VALUE`: `net=dhcp`, `advertise=...`), in the given order.
    pub other: Vec<(String, String)>,
}

impl Settings {
    /// The file's text. Values are single lines: a newline would start another key.
    pub fn file(&self) -> Result<String> {
        let ca = self.ca.then(|| format!("/{CA_PATH}"));
        let port = self.vsock_port.map(|p| p.to_string());
        let pairs = [
            ("control", self.control.as_deref()),
            ("ca", ca.as_deref()),
            ("token", self.token.as_deref()),
            ("name", self.name.as_deref()),
            ("on_exit", self.on_exit.as_deref()),
            ("listen", self.listen.as_deref()),
            ("vsock_port", port.as_deref()),
        ];
        let mut out = String::from(
            "# emberd's configuration, written by ember-image (docs/worker-image.md)\n",
        );
        let fixed: Vec<&str> = pairs.iter().map(|(key, _)| *key).collect();
        for (key, _) in &self.other {
            let well_formed = !key.is_empty()
                && key
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !well_formed {
                bail!("--set {key}=...: a key is lowercase letters, digits and _");
            }
            if fixed.contains(&key.as_str()) {
                bail!("--set {key}=...: ember-image has a flag for {key}; use it");
            }
            if self.other.iter().filter(|(k, _)| k == key).count() > 1 {
                bail!("--set {key}=... is given twice");
            }
        }
        let other = self
            .other
            .iter()
            .map(|(k, v)| (k.as_str(), Some(v.as_str())));
        for (key, value) in pairs.into_iter().chain(other) {
            let Some(value) = value else { continue };
            if value.is_empty() || value.contains(['\n', '\r']) || value != value.trim() {
                bail!("{key} must be one line without surrounding spaces, got {value:?}");
            }
            out.push_str(&format!("{key} = {value}\n"));
        }
        Ok(out)
    }
}

/// The kernel command line: kernel messages on the screen and the serial port, the
/// serial port last so that it is `/dev/console` (emberd's output), and the self-test.
pub fn cmdline(selftest: bool) -> String {
    let mut line = String::from("console=tty0 console=ttyS0");
    if selftest {
        line.push_str(" ember.selftest=1");
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_holds_given_keys_only() {
        let settings = Settings {
            control: Some("https://10.0.0.1:9444".into()),
            ca: true,
            token: Some("secret".into()),
            vsock_port: Some(9445),
            ..Settings::default()
        };
        let text = settings.file().unwrap();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            [
                "control = https://10.0.0.1:9444",
                "ca = /etc/ember/ca.pem",
                "token = secret",
                "vsock_port = 9445"
            ]
        );
    }

    #[test]
    fn file_refuses_a_value_that_would_add_a_key() {
        let settings = Settings {
            name: Some("a\ntoken = x".into()),
            ..Settings::default()
        };
        assert!(settings.file().is_err());
    }

    #[test]
    fn other_keys_follow_and_may_not_shadow_a_flag() {
        let with = |other: &[(&str, &str)]| Settings {
            control: Some("vsock://2:9444".into()),
            other: other
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            ..Settings::default()
        };
        let text = with(&[("net", "dhcp"), ("net_dns", "10.0.0.2")])
            .file()
            .unwrap();
        assert!(text.ends_with("control = vsock://2:9444\nnet = dhcp\nnet_dns = 10.0.0.2\n"));
        for bad in [
            &[("token", "x")][..],
            &[("control", "x")],
            &[("Net", "dhcp")],
            &[("net", "dhcp"), ("net", "none")],
            &[("net", "dhcp\nselftest = 1")],
        ] {
            assert!(with(bad).file().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn cmdline_has_no_secret_and_the_selftest_flag() {
        assert_eq!(cmdline(false), "console=tty0 console=ttyS0");
        assert!(cmdline(true).ends_with(" ember.selftest=1"));
    }
}
