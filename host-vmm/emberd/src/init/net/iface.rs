//! Network interfaces: found and watched through sysfs (`/sys/class/net`), brought up,
//! addressed and routed with the classic `SIOC*` ioctls on an IPv4 socket. Those cover
//! everything init needs (one IPv4 address and a default route) with no netlink
//! protocol code and no async runtime before the worker starts its own.

use std::io;
use std::mem;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::Path;

use socket2::{Domain, Socket, Type};

const SYSFS: &str = "/sys/class/net";

/// The interfaces that can carry the worker's traffic: those backed by a device (not
/// `lo` or virtual ones), in the kernel's order (ifindex).
pub fn physical() -> io::Result<Vec<String>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(SYSFS)? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        let dir = Path::new(SYSFS).join(&name);
        if !dir.join("device").exists() {
            continue;
        }
        let index: u32 = read(&dir.join("ifindex"))
            .and_then(|text| text.parse().ok())
            .unwrap_or(u32::MAX);
        found.push((index, name));
    }
    found.sort();
    Ok(found.into_iter().map(|(_, name)| name).collect())
}

/// Whether `name` exists (its driver may still be probing).
pub fn exists(name: &str) -> bool {
    Path::new(SYSFS).join(name).exists()
}

/// Whether `name` is up with a link (cable in, negotiated).
pub fn has_carrier(name: &str) -> bool {
    read(&Path::new(SYSFS).join(name).join("carrier")).as_deref() == Some("1")
}

/// The interface's Ethernet address.
pub fn mac(name: &str) -> io::Result<[u8; 6]> {
    let text = read(&Path::new(SYSFS).join(name).join("address")).unwrap_or_default();
    parse_mac(&text).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{name} has no Ethernet address ({text:?})"),
        )
    })
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// `52:54:00:12:34:56`.
fn parse_mac(text: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = text.split(':');
    for byte in &mut mac {
        *byte = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

/// Sets or clears `IFF_UP`.
pub fn set_up(name: &str, up: bool) -> io::Result<()> {
    let mut request = ifreq(name)?;
    ioctl(libc::SIOCGIFFLAGS, &mut request)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    let flags = unsafe { request.ifr_ifru.ifru_flags };
    let up_flag = libc::IFF_UP as libc::c_short;
    request.ifr_ifru.ifru_flags = if up {
        flags | up_flag
    } else {
        flags & !up_flag
    };
    ioctl(libc::SIOCSIFFLAGS, &mut request)
}

/// Gives `name` the address `address/prefix` (replacing its primary address); the
/// kernel adds the route to the subnet.
pub fn set_address(name: &str, address: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let mut request = ifreq(name)?;
    request.ifr_ifru.ifru_addr = sockaddr(address);
    ioctl(libc::SIOCSIFADDR, &mut request)?;
    request.ifr_ifru.ifru_netmask = sockaddr(netmask(prefix));
    ioctl(libc::SIOCSIFNETMASK, &mut request)
}

/// Takes the address off `name` (and with it the routes through it).
pub fn clear_address(name: &str) -> io::Result<()> {
    let mut request = ifreq(name)?;
    request.ifr_ifru.ifru_addr = sockaddr(Ipv4Addr::UNSPECIFIED);
    ioctl(libc::SIOCSIFADDR, &mut request)
}

/// Adds the default route through `gateway` on `name`; one that is there already (a new
/// lease with the same router) is fine.
pub fn add_default_route(name: &str, gateway: Ipv4Addr) -> io::Result<()> {
    let mut device = ifreq(name)?.ifr_name;
    // SAFETY: rtentry is plain data (integers, sockaddrs and a pointer), for which all
    // zeroes is valid: no destination, no device.
    let mut route: libc::rtentry = unsafe { mem::zeroed() };
    route.rt_dst = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_genmask = sockaddr(Ipv4Addr::UNSPECIFIED);
    route.rt_gateway = sockaddr(gateway);
    route.rt_flags = libc::RTF_UP | libc::RTF_GATEWAY;
    route.rt_dev = device.as_mut_ptr();
    let socket = control_socket()?;
    // SAFETY: SIOCADDRT reads one rtentry, whose rt_dev points at `device`, a
    // NUL-terminated name that outlives the call.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), libc::SIOCADDRT as _, &mut route) };
    match io::Error::last_os_error() {
        _ if result >= 0 => Ok(()),
        e if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        e => Err(e),
    }
}

/// The netmask of a prefix length (24 is 255.255.255.0).
pub fn netmask(prefix: u8) -> Ipv4Addr {
    Ipv4Addr::from(u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0))
}

/// An `ifreq` naming `name`, the rest zeroed.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{name:?} is not an interface name"),
        ));
    }
    // SAFETY: ifreq is a name and a union of plain data, valid as all zeroes.
    let mut request: libc::ifreq = unsafe { mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(name.bytes()) {
        *slot = byte as libc::c_char;
    }
    Ok(request)
}

fn sockaddr(address: Ipv4Addr) -> libc::sockaddr {
    let inet = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(address).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16 bytes; the kernel reads the generic
    // one as the family says.
    unsafe { mem::transmute::<libc::sockaddr_in, libc::sockaddr>(inet) }
}

/// Any IPv4 socket will do for interface ioctls.
fn control_socket() -> io::Result<Socket> {
    Socket::new(Domain::IPV4, Type::DGRAM, None)
}

fn ioctl(request: libc::c_ulong, ifreq: &mut libc::ifreq) -> io::Result<()> {
    let socket = control_socket()?;
    // SAFETY: every request passed here (SIOC[GS]IFFLAGS, SIOCSIFADDR, SIOCSIFNETMASK)
    // reads or writes one ifreq, which `ifreq` is.
    let result = unsafe { libc::ioctl(socket.as_raw_fd(), request as _, ifreq as *mut _) };
    if result < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_and_netmasks() {
        assert_eq!(
            parse_mac("52:54:00:12:34:5f"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x5f])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
        assert_eq!(parse_mac(""), None);
        assert_eq!(netmask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(netmask(32), Ipv4Addr::BROADCAST);
        assert_eq!(netmask(1), Ipv4Addr::new(128, 0, 0, 0));
        assert_eq!(netmask(0), Ipv4Addr::UNSPECIFIED);
    }

    #[test]
    fn names_must_fit_an_ifreq() {
        assert!(ifreq("eth0").is_ok());
        assert!(ifreq("").is_err());
        assert!(ifreq("sixteen-chars-xx").is_err());
    }

    #[test]
    fn sockaddrs_hold_the_address_in_network_order() {
        let generic = sockaddr(Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(generic.sa_family, libc::AF_INET as libc::sa_family_t);
        assert_eq!(
            &generic.sa_data[2..6],
            &[10, 0, 2, 15].map(|b| b as libc::c_char)
        );
    }
}
