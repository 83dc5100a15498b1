//! The network settings: `net=dhcp` or `net=ADDR/PREFIX`, with `net_iface`, `net_gateway`
//! and `net_dns`. All are optional: a worker inside a VM talks over vsock and needs no
//! NIC, so without `net` only the loopback interface comes up.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::super::config::ConfigError;

/// The keys that only make sense with `net`.
const WITH_NET: [&str; 3] = ["net_iface", "net_gateway", "net_dns"];

/// How the interface gets its address.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    Dhcp,
    Static { address: Ipv4Addr, prefix: u8 },
}

/// One interface to configure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetSettings {
    pub mode: Mode,
    /// `None`: the first interface with a carrier.
    pub iface: Option<String>,
    /// The default route; with DHCP it replaces the server's router.
    pub gateway: Option<Ipv4Addr>,
    /// Name servers for `/etc/resolv.conf`; with DHCP they replace the server's.
    pub dns: Vec<Ipv4Addr>,
}

/// The network settings among `values`; `None` without `net` (or with `net=none`).
pub fn parse(values: &BTreeMap<String, String>) -> Result<Option<NetSettings>, ConfigError> {
    let mode = match values.get("net").map(String::as_str) {
        None | Some("none") => None,
        Some("dhcp") => Some(Mode::Dhcp),
        Some(text) => Some(parse_static(text).ok_or_else(|| {
            invalid(
                "net",
                text,
                "expected dhcp, none or ADDRESS/PREFIX (10.0.0.5/24)",
            )
        })?),
    };
    let gateway = values
        .get("net_gateway")
        .map(|text| {
            text.parse()
                .map_err(|_| invalid("net_gateway", text, "expected an IPv4 address"))
        })
        .transpose()?;
    let dns = match values.get("net_dns") {
        None => Vec::new(),
        Some(text) => text
            .split(',')
            .map(|part| part.trim().parse())
            .collect::<Result<_, _>>()
            .map_err(|_| {
                invalid(
                    "net_dns",
                    text,
                    "expected IPv4 addresses separated by commas",
                )
            })?,
    };
    let iface = values.get("net_iface").cloned();
    if let Some(name) = &iface {
        if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('/') {
            return Err(invalid(
                "net_iface",
                name,
                "expected an interface name (eth0, enp3s0), at most 15 characters",
            ));
        }
    }
    let Some(mode) = mode else {
        if let Some(key) = WITH_NET.iter().find(|key| values.contains_key(**key)) {
            let value = &values[*key];
            return Err(invalid(
                key,
                value,
                "needs net=dhcp or net=ADDRESS/PREFIX as well",
            ));
        }
        return Ok(None);
    };
    Ok(Some(NetSettings {
        mode,
        iface,
        gateway,
        dns,
    }))
}

/// `10.0.0.5/24`: an address and a prefix length of 1 to 32.
fn parse_static(text: &str) -> Option<Mode> {
    let (address, prefix) = text.split_once('/')?;
    let address: Ipv4Addr = address.parse().ok()?;
    let prefix: u8 = prefix.parse().ok().filter(|p| (1..=32).contains(p))?;
    if address.is_unspecified() || address.is_broadcast() || address.is_multicast() {
        return None;
    }
    Some(Mode::Static { address, prefix })
}

fn invalid(key: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Value {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn without_net_there_is_nothing_to_configure() {
        assert_eq!(parse(&values(&[])), Ok(None));
        assert_eq!(parse(&values(&[("net", "none")])), Ok(None));
    }

    #[test]
    fn dhcp_on_the_first_interface_with_a_carrier() {
        assert_eq!(
            parse(&values(&[("net", "dhcp")])),
            Ok(Some(NetSettings {
                mode: Mode::Dhcp,
                iface: None,
                gateway: None,
                dns: Vec::new(),
            }))
        );
    }

    #[test]
    fn a_static_address_with_gateway_dns_and_interface() {
        let settings = parse(&values(&[
            ("net", "192.168.7.20/24"),
            ("net_gateway", "192.168.7.1"),
            ("net_dns", "192.168.7.1, 9.9.9.9"),
            ("net_iface", "enp3s0"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            settings.mode,
            Mode::Static {
                address: Ipv4Addr::new(192, 168, 7, 20),
                prefix: 24
            }
        );
        assert_eq!(settings.gateway, Some(Ipv4Addr::new(192, 168, 7, 1)));
        assert_eq!(
            settings.dns,
            [Ipv4Addr::new(192, 168, 7, 1), Ipv4Addr::new(9, 9, 9, 9)]
        );
        assert_eq!(settings.iface.as_deref(), Some("enp3s0"));
    }

    #[test]
    fn bad_values_name_the_key() {
        for (key, value) in [
            ("net", "static"),
            ("net", "10.0.0.5"),
            ("net", "10.0.0.5/33"),
            ("net", "10.0.0.5/0"),
            ("net", "0.0.0.0/8"),
            ("net", "fe80::1/64"),
            ("net_gateway", "10.0.0"),
            ("net_dns", "1.1.1.1,,"),
            ("net_iface", "a-name-longer-than-15"),
        ] {
            let mut pairs = vec![(key, value)];
            if key != "net" {
                pairs.push(("net", "dhcp"));
            }
            let err = parse(&values(&pairs)).unwrap_err().to_string();
            assert!(err.starts_with(&format!("{key}=")), "{err}");
        }
    }

    #[test]
    fn interface_settings_without_net_are_refused() {
        let err = parse(&values(&[("net_gateway", "10.0.0.1")]))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "net_gateway=\"10.0.0.1\": needs net=dhcp or net=ADDRESS/PREFIX as well"
        );
    }
}
