//! Networking in init mode. `lo` always comes up. With `net=...` one more interface
//! does ([`settings`]): the one named by `net_iface`, or the first with a link. A static
//! address is set as given; `net=dhcp` asks a DHCP server ([`client`], [`dhcp`]) for the
//! address, prefix, router and name servers. The address and default route are set with
//! ioctls ([`iface`]) and the name servers written to `/etc/resolv.conf`.
//!
//! What is wrong in the configuration (no such interface, an address the kernel
//! refuses) is fatal, like any bad setting. What is missing in the network (no link, no
//! DHCP answer) is waited for with a warning line now and then, as the worker waits for
//! an unreachable control: the machine comes up once the switch or the DHCP server
//! does, without a power cycle.

mod client;
mod dhcp;
mod iface;
mod lease;
pub mod settings;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use client::{Failure, UdpTransport};
use settings::{Mode, NetSettings};

/// How long a driver may take to create its interface after its module loaded.
const DEVICE_WAIT: Duration = Duration::from_secs(10);
/// How often to say that no link has come up yet.
const LINK_WARNING: Duration = Duration::from_secs(30);
/// How often to look at the interfaces while waiting.
const POLL: Duration = Duration::from_millis(100);
/// The pause before a new DHCP transaction after one failed.
const DHCP_PAUSE: Duration = Duration::from_secs(4);
/// Where the name servers go (musl's resolver reads the first three).
const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Brings up `lo` and, with `settings`, the configured interface; with DHCP, a thread
/// keeps the lease from then on ([`lease`]).
pub fn bring_up(settings: Option<&NetSettings>) -> Result<(), String> {
    iface::set_up("lo", true).map_err(|e| format!("network: bringing lo up: {e}"))?;
    let Some(settings) = settings else {
        log::info!("network: lo is up; no other interface configured (net=...)");
        return Ok(());
    };
    let name = match &settings.iface {
        Some(name) => {
            wait_for_device(name)?;
            set_up(name)?;
            if settings.mode == Mode::Dhcp {
                wait_for_link(std::slice::from_ref(name));
            }
            name.clone()
        }
        None => first_with_link()?,
    };
    match settings.mode {
        Mode::Static { address, prefix } => {
            let addressing = Addressing {
                address,
                prefix,
                gateway: settings.gateway,
                dns: settings.dns.clone(),
            };
            apply(&name, &addressing)?;
            log::info!("network: {name} is {addressing} (static)");
        }
        Mode::Dhcp => {
            let mac = iface::mac(&name).map_err(|e| format!("network: {e}"))?;
            let mut transport = UdpTransport::bind(&name)
                .map_err(|e| format!("network: the DHCP client's socket on {name}: {e}"))?;
            let (lease, took) = dhcp_lease(&name, mac, &mut transport)?;
            let addressing = Addressing::from_lease(&lease, settings);
            apply(&name, &addressing)?;
            log::info!(
                "network: {name} is {addressing} (DHCP from {} in {took:.1?}, {})",
                lease.server,
                lease::describe(&lease)
            );
            lease::keep(lease::Keeper {
                name,
                mac,
                transport,
                settings: settings.clone(),
                lease,
            })
            .map_err(|e| format!("network: starting the lease's thread: {e}"))?;
        }
    }
    Ok(())
}

/// What the interface is given.
#[derive(Debug, PartialEq, Eq)]
struct Addressing {
    address: Ipv4Addr,
    prefix: u8,
    gateway: Option<Ipv4Addr>,
    dns: Vec<Ipv4Addr>,
}

impl Addressing {
    /// The lease's, with `net_gateway` and `net_dns` in place of the server's.
    fn from_lease(lease: &dhcp::Lease, settings: &NetSettings) -> Addressing {
        Addressing {
            address: lease.address,
            prefix: lease.prefix,
            gateway: settings.gateway.or(lease.router),
            dns: if settings.dns.is_empty() {
                lease.dns.clone()
            } else {
                settings.dns.clone()
            },
        }
    }
}

/// `10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3`.
impl std::fmt::Display for Addressing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}, ", self.address, self.prefix)?;
        match self.gateway {
            Some(gateway) => write!(f, "gateway {gateway}, ")?,
            None => write!(f, "no gateway, ")?,
        }
        if self.dns.is_empty() {
            return write!(f, "no DNS");
        }
        let dns: Vec<String> = self.dns.iter().map(Ipv4Addr::to_string).collect();
        write!(f, "DNS {}", dns.join(", "))
    }
}

/// Sets the address, the default route and the name servers.
fn apply(name: &str, addressing: &Addressing) -> Result<(), String> {
    let Addressing {
        address, prefix, ..
    } = addressing;
    iface::set_address(name, *address, *prefix)
        .map_err(|e| format!("network: setting {address}/{prefix} on {name}: {e}"))?;
    if let Some(gateway) = addressing.gateway {
        iface::add_default_route(name, gateway)
            .map_err(|e| format!("network: the default route via {gateway} on {name}: {e}"))?;
    }
    if !addressing.dns.is_empty() {
        std::fs::write(RESOLV_CONF, resolv_conf(&addressing.dns))
            .map_err(|e| format!("network: writing {RESOLV_CONF}: {e}"))?;
    }
    Ok(())
}

fn set_up(name: &str) -> Result<(), String> {
    iface::set_up(name, true).map_err(|e| format!("network: bringing {name} up: {e}"))
}

/// Waits for `name` to appear; refuses a name that does not within [`DEVICE_WAIT`].
fn wait_for_device(name: &str) -> Result<(), String> {
    let deadline = Instant::now() + DEVICE_WAIT;
    while !iface::exists(name) {
        if Instant::now() >= deadline {
            let present = iface::physical().unwrap_or_default();
            return Err(format!(
                "network: no interface {name} after {DEVICE_WAIT:?} (there are: {})",
                if present.is_empty() {
                    "none".to_owned()
                } else {
                    present.join(", ")
                }
            ));
        }
        std::thread::sleep(POLL);
    }
    Ok(())
}

/// Brings up every physical interface and picks the first with a link, waiting for one
/// as long as it takes; the others go down again.
fn first_with_link() -> Result<String, String> {
    let deadline = Instant::now() + DEVICE_WAIT;
    let candidates = loop {
        let found = iface::physical().map_err(|e| format!("network: listing interfaces: {e}"))?;
        if !found.is_empty() {
            break found;
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "network: no network interface after {DEVICE_WAIT:?} (is its driver among the image's modules?)"
            ));
        }
        std::thread::sleep(POLL);
    };
    for name in &candidates {
        set_up(name)?;
    }
    let chosen = wait_for_link(&candidates);
    for other in candidates.iter().filter(|name| **name != chosen) {
        if let Err(e) = iface::set_up(other, false) {
            log::warn!("network: taking {other} down again: {e}");
        }
    }
    Ok(chosen)
}

/// The first of `names` that has a link, once one has; says now and then that none has.
fn wait_for_link(names: &[String]) -> String {
    let start = Instant::now();
    let mut next_warning = start + LINK_WARNING;
    loop {
        if let Some(name) = names.iter().find(|name| iface::has_carrier(name)) {
            return name.clone();
        }
        if Instant::now() >= next_warning {
            log::warn!(
                "network: no link on {} after {}s; still waiting (cable, switch port?)",
                names.join(", "),
                start.elapsed().as_secs()
            );
            next_warning += LINK_WARNING;
        }
        std::thread::sleep(POLL);
    }
}

/// A lease for `name`, however many transactions it takes, and how long the one that
/// succeeded took.
fn dhcp_lease(
    name: &str,
    mac: [u8; 6],
    transport: &mut UdpTransport,
) -> Result<(dhcp::Lease, Duration), String> {
    loop {
        let xid = getrandom::u32().map_err(|e| format!("network: getrandom: {e}"))?;
        let jitter = Duration::from_millis(u64::from(xid >> 22)); // 0 to 1023 ms
        let start = Instant::now();
        match client::obtain(transport, xid, mac, jitter) {
            Ok(lease) => return Ok((lease, start.elapsed())),
            Err(Failure::Io(e)) => return Err(format!("network: DHCP on {name}: {e}")),
            Err(failure) => {
                log::warn!("network: {name}: {failure}; trying again");
                std::thread::sleep(DHCP_PAUSE);
            }
        }
    }
}

fn resolv_conf(servers: &[Ipv4Addr]) -> String {
    servers
        .iter()
        .map(|server| format!("nameserver {server}\n"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_override_the_lease_s_gateway_and_name_servers() {
        let lease = dhcp::testing::qemu_lease();
        let mut settings = NetSettings {
            mode: Mode::Dhcp,
            iface: None,
            gateway: None,
            dns: Vec::new(),
        };
        let from_server = Addressing::from_lease(&lease, &settings);
        assert_eq!(
            from_server.to_string(),
            "10.0.2.15/24, gateway 10.0.2.2, DNS 10.0.2.3"
        );
        settings.gateway = Some(Ipv4Addr::new(10, 0, 2, 1));
        settings.dns = vec![Ipv4Addr::new(9, 9, 9, 9), Ipv4Addr::new(1, 1, 1, 1)];
        assert_eq!(
            Addressing::from_lease(&lease, &settings).to_string(),
            "10.0.2.15/24, gateway 10.0.2.1, DNS 9.9.9.9, 1.1.1.1"
        );
        let bare = Addressing {
            gateway: None,
            dns: Vec::new(),
            ..from_server
        };
        assert_eq!(bare.to_string(), "10.0.2.15/24, no gateway, no DNS");
    }

    #[test]
    fn resolv_conf_lists_the_servers_in_order() {
        assert_eq!(
            resolv_conf(&[Ipv4Addr::new(10, 0, 2, 3), Ipv4Addr::new(9, 9, 9, 9)]),
            "nameserver 10.0.2.3\nnameserver 9.9.9.9\n"
        );
    }
}
