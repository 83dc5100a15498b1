//! The DHCP client's exchanges (RFC 2131 section 4.4). [`obtain`]: DISCOVER until an
//! OFFER comes, then REQUEST it until the ACK, each retransmitted after 4, 8, 16 and 32
//! seconds (doubling from 4 s, as 4.1 says, with up to a second of random jitter so a
//! rack booting at once does not retransmit in step). [`renew`]: at half the lease, ask
//! the server that gave it to extend it, and from seven eighths on any server (4.4.5).
//! The messages go through a [`Transport`]: a UDP socket bound to the interface
//! ([`UdpTransport`]), or a script in the tests.

use std::io::{self, Read};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use dhcproto::v4::{CLIENT_PORT, SERVER_PORT};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::dhcp::{self, Lease, Reply};

/// The pauses after each transmission of one message.
const WAITS: [Duration; 4] = [
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(32),
];

/// DHCP messages out (to a server or broadcast), the replies in.
pub trait Transport {
    /// Sends `message` to port 67 of `to` (a server, or the broadcast address).
    fn send(&mut self, message: &[u8], to: Ipv4Addr) -> io::Result<()>;
    /// The next datagram that arrives before `deadline`; `None` once it has passed.
    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>>;
}

/// Why no lease was obtained.
#[derive(Debug, thiserror::Error)]
pub enum Failure {
    #[error("no DHCP offer after {0} DISCOVERs")]
    NoOffer(usize),
    #[error("no answer from DHCP server {server} to {count} REQUESTs for {address}")]
    NoAck {
        server: Ipv4Addr,
        address: Ipv4Addr,
        count: usize,
    },
    #[error("DHCP server {server} refused {address}: {message:?}")]
    Nak {
        server: Ipv4Addr,
        address: Ipv4Addr,
        message: String,
    },
    #[error("no answer to the renewal of {address} before its lease ended")]
    Expired { address: Ipv4Addr },
    #[error("{0}")]
    Io(#[from] io::Error),
}

/// One transaction, `xid`, for the interface with Ethernet address `mac`; `jitter` (0
/// to 1 s) is added to every pause.
pub fn obtain(
    transport: &mut dyn Transport,
    xid: u32,
    mac: [u8; 6],
    jitter: Duration,
) -> Result<Lease, Failure> {
    let mut transaction = Transaction {
        transport,
        xid,
        mac,
    };
    let waits = WAITS.map(|wait| wait + jitter);
    let offer = transaction
        .ask(
            &dhcp::discover(xid, mac),
            Ipv4Addr::BROADCAST,
            &waits,
            |reply| match reply {
                Reply::Offer(lease) => Some(lease),
                _ => None,
            },
        )?
        .ok_or(Failure::NoOffer(WAITS.len()))?;
    let request = dhcp::request(xid, mac, &offer);
    let answer = transaction.ask(&request, Ipv4Addr::BROADCAST, &waits, |reply| match reply {
        Reply::Ack(lease) if lease.server == offer.server => Some(Ok(lease)),
        Reply::Nak(message) => Some(Err(message)),
        _ => None,
    })?;
    match answer {
        Some(Ok(lease)) => Ok(lease),
        Some(Err(message)) => Err(Failure::Nak {
            server: offer.server,
            address: offer.address,
            message,
        }),
        None => Err(Failure::NoAck {
            server: offer.server,
            address: offer.address,
            count: WAITS.len(),
        }),
    }
}

/// Renews `lease` at half its time (an infinite one needs nothing): REQUESTs to its server
/// until seven eighths, then broadcast until it ends, each retransmitted after half the
/// time left, at least a minute (4.4.5). The renewed lease, or why there is none.
pub fn renew(
    transport: &mut dyn Transport,
    xid: u32,
    mac: [u8; 6],
    lease: &Lease,
) -> Result<Lease, Failure> {
    let Some(time) = lease.time else {
        return Ok(lease.clone());
    };
    let mut transaction = Transaction {
        transport,
        xid,
        mac,
    };
    let message = dhcp::renew(xid, mac, lease.address);
    let wanted = |reply: Reply| match reply {
        Reply::Ack(renewed) => Some(Ok(renewed)),
        Reply::Nak(message) => Some(Err(message)),
        Reply::Offer(_) => None,
    };
    let renewing = retransmissions(time * 3 / 8);
    let rebinding = retransmissions(time / 8);
    let answer = match transaction.ask(&message, lease.server, &renewing, wanted)? {
        Some(answer) => Some(answer),
        None => transaction.ask(&message, Ipv4Addr::BROADCAST, &rebinding, wanted)?,
    };
    match answer {
        Some(Ok(renewed)) => Ok(renewed),
        Some(Err(message)) => Err(Failure::Nak {
            server: lease.server,
            address: lease.address,
            message,
        }),
        None => Err(Failure::Expired {
            address: lease.address,
        }),
    }
}

/// The pauses that fill `total`: half the time left each, at least a minute.
fn retransmissions(total: Duration) -> Vec<Duration> {
    const MIN: Duration = Duration::from_secs(60);
    let mut waits = Vec::new();
    let mut left = total;
    while !left.is_zero() {
        let wait = (left / 2).max(MIN).min(left);
        waits.push(wait);
        left -= wait;
    }
    waits
}

/// Where replies come in; those to this `xid` and `mac` are the transaction's.
struct Transaction<'a> {
    transport: &'a mut dyn Transport,
    xid: u32,
    mac: [u8; 6],
}

impl Transaction<'_> {
    /// Sends `message` to `to` once per pause of `waits`, each time waiting that long
    /// for a reply to this transaction that `wanted` picks.
    fn ask<T>(
        &mut self,
        message: &[u8],
        to: Ipv4Addr,
        waits: &[Duration],
        wanted: impl Fn(Reply) -> Option<T>,
    ) -> io::Result<Option<T>> {
        for wait in waits {
            self.transport.send(message, to)?;
            let deadline = Instant::now() + *wait;
            while let Some(bytes) = self.transport.recv(deadline)? {
                if let Some(found) = dhcp::parse_reply(&bytes, self.xid, self.mac).and_then(&wanted)
                {
                    return Ok(Some(found));
                }
            }
        }
        Ok(None)
    }
}

/// UDP port 68 on one interface, talking to port 67 of the servers. The kernel sends from
/// 0.0.0.0 while the interface has no address and hands up broadcast replies, so no
/// raw socket (and no hand-made IP and UDP headers) is needed.
pub struct UdpTransport {
    socket: Socket,
}

impl UdpTransport {
    pub fn bind(iface: &str) -> io::Result<UdpTransport> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.bind_device(Some(iface.as_bytes()))?;
        socket.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT).into())?;
        Ok(UdpTransport { socket })
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, message: &[u8], to: Ipv4Addr) -> io::Result<()> {
        let to: SockAddr = SocketAddrV4::new(to, SERVER_PORT).into();
        self.socket.send_to(message, &to).map(drop)
    }

    fn recv(&mut self, deadline: Instant) -> io::Result<Option<Vec<u8>>> {
        let mut buffer = [0u8; 1500];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(None);
            }
            self.socket.set_read_timeout(Some(left))?;
            match (&self.socket).read(&mut buffer) {
                Ok(size) => return Ok(Some(buffer[..size].to_vec())),
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock
                            | io::ErrorKind::TimedOut
                            | io::ErrorKind::Interrupted
                    ) => {}
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::VecDeque;

    use dhcproto::v4::MessageType;

    use super::*;
    use crate::init::net::dhcp::testing::{answer, qemu_lease};

    const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

    /// A server that answers each message it is sent with what `script` returns; a
    /// wait for a reply that is not there ends at once.
    struct Scripted<F: FnMut(usize, &[u8]) -> Vec<Vec<u8>>> {
        script: F,
        sent: usize,
        /// Where each message went.
        to: Vec<Ipv4Addr>,
        replies: VecDeque<Vec<u8>>,
    }

    impl<F: FnMut(usize, &[u8]) -> Vec<Vec<u8>>> Transport for Scripted<F> {
        fn send(&mut self, message: &[u8], to: Ipv4Addr) -> io::Result<()> {
            self.replies.extend((self.script)(self.sent, message));
            self.sent += 1;
            self.to.push(to);
            Ok(())
        }

        fn recv(&mut self, _deadline: Instant) -> io::Result<Option<Vec<u8>>> {
            Ok(self.replies.pop_front())
        }
    }

    fn run(script: impl FnMut(usize, &[u8]) -> Vec<Vec<u8>>) -> (Result<Lease, Failure>, usize) {
        let mut server = scripted(script);
        let result = obtain(&mut server, 7, MAC, Duration::ZERO);
        assert!(server.to.iter().all(|to| *to == Ipv4Addr::BROADCAST));
        (result, server.sent)
    }

    fn scripted<F: FnMut(usize, &[u8]) -> Vec<Vec<u8>>>(script: F) -> Scripted<F> {
        Scripted {
            script,
            sent: 0,
            to: Vec::new(),
            replies: VecDeque::new(),
        }
    }

    /// What a well-behaved server answers: an OFFER to a DISCOVER, an ACK to a REQUEST.
    fn serve(message: &[u8]) -> Vec<u8> {
        let kind = if dhcp::testing::kind(message) == MessageType::Discover {
            MessageType::Offer
        } else {
            MessageType::Ack
        };
        answer(message, kind)
    }

    #[test]
    fn discover_offer_request_ack() {
        let (lease, sent) = run(|_, message| vec![serve(message)]);
        assert_eq!(lease.unwrap(), qemu_lease());
        assert_eq!(sent, 2);
    }

    #[test]
    fn lost_messages_are_sent_again_and_strangers_ignored() {
        let (lease, sent) = run(|n, message| match n {
            // The first DISCOVER is lost; the second crosses another client's offer.
            0 => vec![],
            1 => vec![
                b"noise".to_vec(),
                answer(&dhcp::discover(8, MAC), MessageType::Offer),
                serve(message),
            ],
            // The first REQUEST is lost too.
            2 => vec![],
            _ => vec![serve(message)],
        });
        assert_eq!(lease.unwrap(), qemu_lease());
        assert_eq!(sent, 4);
    }

    #[test]
    fn without_a_server_the_discovers_run_out() {
        let (result, sent) = run(|_, _| vec![]);
        assert_eq!(
            result.unwrap_err().to_string(),
            "no DHCP offer after 4 DISCOVERs"
        );
        assert_eq!(sent, 4);
    }

    #[test]
    fn a_nak_or_silence_after_the_offer_is_reported() {
        let (result, _) = run(|n, message| {
            if n == 0 {
                vec![serve(message)]
            } else {
                vec![answer(message, MessageType::Nak)]
            }
        });
        assert_eq!(
            result.unwrap_err().to_string(),
            "DHCP server 10.0.2.2 refused 10.0.2.15: \"\""
        );
        let (result, sent) = run(|n, message| if n == 0 { vec![serve(message)] } else { vec![] });
        assert_eq!(
            result.unwrap_err().to_string(),
            "no answer from DHCP server 10.0.2.2 to 4 REQUESTs for 10.0.2.15"
        );
        assert_eq!(sent, 5);
    }

    #[test]
    fn renewal_asks_the_server_then_anyone_until_the_lease_ends() {
        let lease = qemu_lease();
        let server = lease.server;
        // An answer to the first REQUEST.
        let mut first = scripted(|_, message| vec![answer(message, MessageType::Ack)]);
        assert_eq!(renew(&mut first, 9, MAC, &lease).unwrap(), lease);
        assert_eq!(first.to, [server]);
        // The server is gone: unicasts until 7/8 of a day, then broadcasts, then nothing.
        let mut gone = scripted(|_, _| vec![]);
        let err = renew(&mut gone, 9, MAC, &lease).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no answer to the renewal of 10.0.2.15 before its lease ended"
        );
        let unicasts = gone.to.iter().filter(|to| **to == server).count();
        assert_eq!(
            unicasts,
            retransmissions(Duration::from_secs(86400 * 3 / 8)).len()
        );
        assert_eq!(gone.to.last(), Some(&Ipv4Addr::BROADCAST));
        // Another server answers the broadcast; a NAK ends the lease.
        let mut other = scripted(|n, message| {
            if n < unicasts {
                vec![]
            } else {
                vec![answer(message, MessageType::Ack)]
            }
        });
        assert!(renew(&mut other, 9, MAC, &lease).is_ok());
        let mut nak = scripted(|_, message| vec![answer(message, MessageType::Nak)]);
        assert!(matches!(
            renew(&mut nak, 9, MAC, &lease),
            Err(Failure::Nak { .. })
        ));
    }

    #[test]
    fn retransmissions_halve_the_time_left_down_to_a_minute() {
        let secs = |s: u64| Duration::from_secs(s);
        assert_eq!(
            retransmissions(secs(600)),
            [secs(300), secs(150), secs(75), secs(60), secs(15)]
        );
        assert_eq!(retransmissions(secs(90)), [secs(60), secs(30)]);
        assert!(retransmissions(Duration::ZERO).is_empty());
    }
}
