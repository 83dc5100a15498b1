//! The DHCP client's exchange (RFC 2131 section 4.4.1): DISCOVER until an OFFER comes,
//! then REQUEST it until the ACK, each retransmitted after 4, 8, 16 and 32 seconds
//! (doubling from 4 s, as 4.1 says, with up to a second of random jitter so a rack
//! booting at once does not retransmit in step). The messages go through a
//! [`Transport`]: a UDP socket bound to the interface ([`UdpTransport`]), or a script in
//! the tests.

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

/// Broadcast datagrams out, the replies in.
pub trait Transport {
    fn send(&mut self, message: &[u8]) -> io::Result<()>;
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
        jitter,
    };
    let offer = transaction
        .ask(&dhcp::discover(xid, mac), |reply| match reply {
            Reply::Offer(lease) => Some(lease),
            _ => None,
        })?
        .ok_or(Failure::NoOffer(WAITS.len()))?;
    let answer = transaction.ask(&dhcp::request(xid, mac, &offer), |reply| match reply {
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

struct Transaction<'a> {
    transport: &'a mut dyn Transport,
    xid: u32,
    mac: [u8; 6],
    jitter: Duration,
}

impl Transaction<'_> {
    /// Sends `message` after every pause of [`WAITS`] until `wanted` picks a reply to
    /// this transaction.
    fn ask<T>(
        &mut self,
        message: &[u8],
        wanted: impl Fn(Reply) -> Option<T>,
    ) -> io::Result<Option<T>> {
        for wait in WAITS {
            self.transport.send(message)?;
            let deadline = Instant::now() + wait + self.jitter;
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

/// UDP port 68 on one interface, broadcasting to port 67. The kernel sends from
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
    fn send(&mut self, message: &[u8]) -> io::Result<()> {
        let to: SockAddr = SocketAddrV4::new(Ipv4Addr::BROADCAST, SERVER_PORT).into();
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
        replies: VecDeque<Vec<u8>>,
    }

    impl<F: FnMut(usize, &[u8]) -> Vec<Vec<u8>>> Transport for Scripted<F> {
        fn send(&mut self, message: &[u8]) -> io::Result<()> {
            self.replies.extend((self.script)(self.sent, message));
            self.sent += 1;
            Ok(())
        }

        fn recv(&mut self, _deadline: Instant) -> io::Result<Option<Vec<u8>>> {
            Ok(self.replies.pop_front())
        }
    }

    fn run(script: impl FnMut(usize, &[u8]) -> Vec<Vec<u8>>) -> (Result<Lease, Failure>, usize) {
        let mut server = Scripted {
            script,
            sent: 0,
            replies: VecDeque::new(),
        };
        let result = obtain(&mut server, 7, MAC, Duration::ZERO);
        (result, server.sent)
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
}
