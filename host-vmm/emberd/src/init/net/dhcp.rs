//! DHCPv4 messages (RFC 2131) as the client sends and reads them, encoded and decoded
//! by `dhcproto`. Every request sets the broadcast flag: until the ACK the interface
//! has no address, so the kernel would drop a reply sent to the offered one.

use std::net::Ipv4Addr;
use std::time::Duration;

use dhcproto::v4::{DhcpOption, Flags, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable, Encoder};

/// A server's offer, or the lease it acknowledged.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub server: Ipv4Addr,
    pub router: Option<Ipv4Addr>,
    pub dns: Vec<Ipv4Addr>,
    /// `None`: an infinite lease.
    pub time: Option<Duration>,
}

/// What a server's answer to this client says.
#[derive(Debug, PartialEq, Eq)]
pub enum Reply {
    Offer(Lease),
    Ack(Lease),
    /// The server refuses the request; its message, if it gave one.
    Nak(String),
}

/// The options the client asks for.
const WANTED: [OptionCode; 4] = [
    OptionCode::SubnetMask,
    OptionCode::Router,
    OptionCode::DomainNameServer,
    OptionCode::AddressLeaseTime,
];

/// DHCPDISCOVER: who offers `mac` an address?
pub fn discover(xid: u32, mac: [u8; 6]) -> Vec<u8> {
    encode(&request_message(xid, mac, MessageType::Discover))
}

/// DHCPREQUEST for `offer`, in the same transaction as the discover.
pub fn request(xid: u32, mac: [u8; 6], offer: &Lease) -> Vec<u8> {
    let mut message = request_message(xid, mac, MessageType::Request);
    let opts = message.opts_mut();
    opts.insert(DhcpOption::RequestedIpAddress(offer.address));
    opts.insert(DhcpOption::ServerIdentifier(offer.server));
    encode(&message)
}

/// DHCPREQUEST renewing the lease of `address`, which the interface has: the server
/// answers to it directly (RFC 2131 4.3.2, RENEWING and REBINDING).
pub fn renew(xid: u32, mac: [u8; 6], address: Ipv4Addr) -> Vec<u8> {
    let mut message = request_message(xid, mac, MessageType::Request);
    message.set_ciaddr(address).set_flags(Flags::default());
    encode(&message)
}

fn request_message(xid: u32, mac: [u8; 6], kind: MessageType) -> Message {
    let mut message = Message::new_with_id(
        xid,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        Ipv4Addr::UNSPECIFIED,
        &mac,
    );
    message.set_flags(Flags::default().set_broadcast());
    let opts = message.opts_mut();
    opts.insert(DhcpOption::MessageType(kind));
    // Type 1 (Ethernet) and the MAC, as other clients on the same machine would send it.
    let mut id = vec![1];
    id.extend_from_slice(&mac);
    opts.insert(DhcpOption::ClientIdentifier(id));
    opts.insert(DhcpOption::ParameterRequestList(WANTED.to_vec()));
    message
}

fn encode(message: &Message) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(300);
    message
        .encode(&mut Encoder::new(&mut bytes))
        .expect("a DHCP message of known options always encodes");
    bytes
}

/// The answer in `bytes` if it is a server's reply to transaction `xid` for `mac`;
/// anything else on the port (other clients' transactions, garbage) is `None`.
pub fn parse_reply(bytes: &[u8], xid: u32, mac: [u8; 6]) -> Option<Reply> {
    let message = Message::decode(&mut Decoder::new(bytes)).ok()?;
    if message.opcode() != Opcode::BootReply
        || message.xid() != xid
        || message.chaddr().get(..6) != Some(&mac[..])
    {
        return None;
    }
    let opts = message.opts();
    let kind = opts.msg_type()?;
    if kind == MessageType::Nak {
        let text = match opts.get(OptionCode::Message) {
            Some(DhcpOption::Message(text)) => text.clone(),
            _ => String::new(),
        };
        return Some(Reply::Nak(text));
    }
    let address = message.yiaddr();
    let server = match opts.get(OptionCode::ServerIdentifier) {
        Some(DhcpOption::ServerIdentifier(ip)) => *ip,
        _ => return None,
    };
    if address.is_unspecified() {
        return None;
    }
    let prefix = match opts.get(OptionCode::SubnetMask) {
        Some(DhcpOption::SubnetMask(mask)) => prefix_of(*mask)?,
        _ => class_prefix(address),
    };
    let router = match opts.get(OptionCode::Router) {
        Some(DhcpOption::Router(routers)) => routers.first().copied(),
        _ => None,
    };
    let dns = match opts.get(OptionCode::DomainNameServer) {
        Some(DhcpOption::DomainNameServer(servers)) => servers.clone(),
        _ => Vec::new(),
    };
    let time = match opts.get(OptionCode::AddressLeaseTime) {
        Some(DhcpOption::AddressLeaseTime(u32::MAX)) | None => None,
        Some(DhcpOption::AddressLeaseTime(seconds)) => Some(Duration::from_secs((*seconds).into())),
        Some(_) => None,
    };
    let lease = Lease {
        address,
        prefix,
        server,
        router,
        dns,
        time,
    };
    match kind {
        MessageType::Offer => Some(Reply::Offer(lease)),
        MessageType::Ack => Some(Reply::Ack(lease)),
        _ => None,
    }
}

/// The prefix length of a contiguous netmask (255.255.255.0 is 24); `None` for others.
fn prefix_of(mask: Ipv4Addr) -> Option<u8> {
    let bits = u32::from(mask);
    let prefix = bits.leading_ones();
    (bits.checked_shl(prefix).unwrap_or(0) == 0 && prefix > 0).then_some(prefix as u8)
}

/// The class A/B/C prefix, RFC 1122's default when a server sends no netmask.
fn class_prefix(address: Ipv4Addr) -> u8 {
    match address.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// A DHCP server's side, for the tests of this module and of the client.
#[cfg(test)]
pub mod testing {
    use super::*;

    /// The type of a client's message.
    pub fn kind(request: &[u8]) -> MessageType {
        let message = Message::decode(&mut Decoder::new(request)).unwrap();
        message.opts().msg_type().unwrap()
    }

    /// The reply of type `kind` to a client's `request`, as QEMU's user-mode network
    /// sends it.
    pub fn answer(request: &[u8], kind: MessageType) -> Vec<u8> {
        let request = Message::decode(&mut Decoder::new(request)).unwrap();
        reply(kind, request.xid(), request.chaddr().try_into().unwrap())
    }

    /// A reply as QEMU's user-mode network sends it.
    pub fn reply(kind: MessageType, xid: u32, mac: [u8; 6]) -> Vec<u8> {
        let mut message = Message::new_with_id(
            xid,
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::new(10, 0, 2, 15),
            Ipv4Addr::new(10, 0, 2, 2),
            Ipv4Addr::UNSPECIFIED,
            &mac,
        );
        message.set_opcode(Opcode::BootReply);
        let opts = message.opts_mut();
        opts.insert(DhcpOption::MessageType(kind));
        opts.insert(DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)));
        opts.insert(DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)));
        opts.insert(DhcpOption::Router(vec![Ipv4Addr::new(10, 0, 2, 2)]));
        opts.insert(DhcpOption::DomainNameServer(vec![Ipv4Addr::new(
            10, 0, 2, 3,
        )]));
        opts.insert(DhcpOption::AddressLeaseTime(86400));
        encode(&message)
    }

    pub fn qemu_lease() -> Lease {
        Lease {
            address: Ipv4Addr::new(10, 0, 2, 15),
            prefix: 24,
            server: Ipv4Addr::new(10, 0, 2, 2),
            router: Some(Ipv4Addr::new(10, 0, 2, 2)),
            dns: vec![Ipv4Addr::new(10, 0, 2, 3)],
            time: Some(Duration::from_secs(86400)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{qemu_lease, reply};
    use super::*;

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];
    const XID: u32 = 0x1234_5678;

    fn decode(bytes: &[u8]) -> Message {
        Message::decode(&mut Decoder::new(bytes)).unwrap()
    }

    #[test]
    fn discover_is_a_broadcast_request_for_the_mac() {
        let message = decode(&discover(XID, MAC));
        assert_eq!(message.opcode(), Opcode::BootRequest);
        assert_eq!(message.xid(), XID);
        assert_eq!(message.chaddr(), MAC);
        assert!(message.flags().broadcast());
        assert_eq!(message.ciaddr(), Ipv4Addr::UNSPECIFIED);
        let opts = message.opts();
        assert_eq!(opts.msg_type(), Some(MessageType::Discover));
        assert_eq!(
            opts.get(OptionCode::ClientIdentifier),
            Some(&DhcpOption::ClientIdentifier(vec![
                1, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56
            ]))
        );
        assert!(matches!(
            opts.get(OptionCode::ParameterRequestList),
            Some(DhcpOption::ParameterRequestList(list)) if list.contains(&OptionCode::Router)
        ));
        assert!(!opts.contains(OptionCode::RequestedIpAddress));
    }

    #[test]
    fn request_names_the_offered_address_and_its_server() {
        let message = decode(&request(XID, MAC, &qemu_lease()));
        let opts = message.opts();
        assert_eq!(opts.msg_type(), Some(MessageType::Request));
        assert_eq!(message.xid(), XID);
        assert!(message.flags().broadcast());
        assert_eq!(
            opts.get(OptionCode::RequestedIpAddress),
            Some(&DhcpOption::RequestedIpAddress(Ipv4Addr::new(10, 0, 2, 15)))
        );
        assert_eq!(
            opts.get(OptionCode::ServerIdentifier),
            Some(&DhcpOption::ServerIdentifier(Ipv4Addr::new(10, 0, 2, 2)))
        );
    }

    #[test]
    fn renewal_is_from_the_leased_address_without_server_or_requested_address() {
        let message = decode(&renew(XID, MAC, Ipv4Addr::new(10, 0, 2, 15)));
        assert_eq!(message.opts().msg_type(), Some(MessageType::Request));
        assert_eq!(message.ciaddr(), Ipv4Addr::new(10, 0, 2, 15));
        assert!(!message.flags().broadcast());
        assert!(!message.opts().contains(OptionCode::ServerIdentifier));
        assert!(!message.opts().contains(OptionCode::RequestedIpAddress));
    }

    #[test]
    fn offers_and_acks_give_the_lease() {
        assert_eq!(
            parse_reply(&reply(MessageType::Offer, XID, MAC), XID, MAC),
            Some(Reply::Offer(qemu_lease()))
        );
        assert_eq!(
            parse_reply(&reply(MessageType::Ack, XID, MAC), XID, MAC),
            Some(Reply::Ack(qemu_lease()))
        );
    }

    #[test]
    fn replies_to_other_transactions_or_clients_and_requests_are_ignored() {
        let offer = reply(MessageType::Offer, XID, MAC);
        assert_eq!(parse_reply(&offer, XID + 1, MAC), None);
        assert_eq!(parse_reply(&offer, XID, [2, 0, 0, 0, 0, 1]), None);
        assert_eq!(parse_reply(&discover(XID, MAC), XID, MAC), None);
        assert_eq!(parse_reply(b"not dhcp", XID, MAC), None);
        assert_eq!(parse_reply(&offer[..100], XID, MAC), None);
    }

    #[test]
    fn a_nak_carries_the_server_s_message() {
        let mut message = decode(&reply(MessageType::Nak, XID, MAC));
        message
            .opts_mut()
            .insert(DhcpOption::Message("wrong network".into()));
        assert_eq!(
            parse_reply(&encode(&message), XID, MAC),
            Some(Reply::Nak("wrong network".into()))
        );
    }

    #[test]
    fn without_a_netmask_or_lease_time_the_defaults_apply() {
        let mut message = decode(&reply(MessageType::Ack, XID, MAC));
        message.opts_mut().remove(OptionCode::SubnetMask);
        message
            .opts_mut()
            .insert(DhcpOption::AddressLeaseTime(u32::MAX));
        let Some(Reply::Ack(lease)) = parse_reply(&encode(&message), XID, MAC) else {
            panic!("no ack");
        };
        assert_eq!(lease.prefix, 8);
        assert_eq!(lease.time, None);
    }

    #[test]
    fn netmasks_become_prefix_lengths() {
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 0)), Some(24));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 255, 255)), Some(32));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 255, 240, 0)), Some(20));
        assert_eq!(prefix_of(Ipv4Addr::new(255, 0, 255, 0)), None);
        assert_eq!(prefix_of(Ipv4Addr::new(0, 0, 0, 0)), None);
        assert_eq!(class_prefix(Ipv4Addr::new(172, 16, 0, 9)), 16);
        assert_eq!(class_prefix(Ipv4Addr::new(192, 168, 1, 9)), 24);
    }
}
