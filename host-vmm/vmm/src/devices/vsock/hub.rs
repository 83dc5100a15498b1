//! Host side of a VM's vsock: the connection table shared by the vCPU thread (which moves
//! packets in and out of the virtqueues) and host threads (which read and write streams).
//!
//! Flow control follows the virtio-vsock credit scheme in both directions: the host never
//! sends more than the guest advertised, and a guest that sends more than the host
//! advertised loses the connection.

use std::collections::{BTreeMap, VecDeque};
use std::error::Error;
use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ember_wire::virtio::vsock::{
    OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN,
    SHUTDOWN_RCV, SHUTDOWN_SEND,
};

use super::error::StreamError;

/// Receive buffer the host advertises per connection: more than one maximum frame, so a
/// guest reply never waits for the host to read.
pub const HOST_BUF_ALLOC: u32 = 8 << 20;
/// Bytes a host writer may queue for the guest before `write` blocks: host memory a guest
/// that stops reading holds, so no more than the guest's own receive buffer.
const HOST_TX_LIMIT: usize = 1 << 20;
/// Connections one VM may have open at once.
const MAX_CONNECTIONS: usize = 64;
const FIRST_LOCAL_PORT: u32 = 1024;
/// Control packets (resets, credit updates) queued for a guest that posts no RX buffers
/// to take them: a guest can make the host queue one per packet it sends, so past this
/// many it has broken the device contract and loses its VM (see [`Hub::overflowed`]).
pub const MAX_CONTROL_QUEUED: usize = 1024;

#[derive(Clone, Debug)]
enum ConnState {
    Connecting,
    Established,
    Closed(StreamError),
}

struct Conn {
    peer_port: u32,
    state: ConnState,
    /// Guest → host bytes not yet read.
    rx: VecDeque<u8>,
    /// Bytes the host has read (our `fwd_cnt`), and the value the guest last saw.
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    /// Host → guest bytes not yet sent.
    tx: VecDeque<u8>,
    tx_cnt: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// The guest will send no more data: reads end after `rx` drains.
    peer_done_sending: bool,
    /// The host stream was dropped: shut down once `tx` drains, forget on the guest's RST.
    host_closed: bool,
}

impl Conn {
    fn credit(&self) -> u32 {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt))
    }

    fn established(&self) -> bool {
        matches!(self.state, ConnState::Established)
    }

    /// Open, with data queued for the guest and credit to send it.
    fn sendable(&self) -> bool {
        self.established() && !self.tx.is_empty() && self.credit() > 0
    }
}

/// A control packet waiting for an RX buffer.
struct Ctrl {
    local: u32,
    peer: u32,
    op: u16,
    flags: u32,
}

/// When a requested pause may happen.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pause {
    /// At the next park with no connection open (the guest's memory then holds no
    /// connection state: right for a snapshot).
    Idle,
    /// At the next park, whatever is open or queued (right before a reset, which drops all
    /// connections with the guest's memory).
    Now,
}

/// Why a parked vCPU woke up.
#[derive(Debug, PartialEq, Eq)]
pub enum Wake {
    Work,
    Stop,
    Pause,
    /// The host asked for a trim of guest memory, and the guest has been idle long enough.
    Trim,
}

/// One packet the device should write into the guest's RX queue.
pub struct Outgoing {
    pub local: u32,
    pub peer: u32,
    pub op: u16,
    pub flags: u32,
    pub fwd_cnt: u32,
    pub data: Vec<u8>,
}

/// A packet the guest put in its TX queue, as the hub needs it.
pub struct Incoming<'a> {
    pub local: u32,
    pub peer: u32,
    pub op: u16,
    pub flags: u32,
    pub buf_alloc: u32,
    pub fwd_cnt: u32,
    pub data: &'a [u8],
}

#[derive(Default)]
struct State {
    conns: BTreeMap<u32, Conn>,
    ctrl: VecDeque<Ctrl>,
    next_port: u32,
    /// Why the VM is gone; every stream fails with this from then on.
    dead: Option<StreamError>,
    /// The vCPU must stop parking and return to its run loop.
    stop: bool,
    /// Leave the park for a snapshot or reset (see [`Pause`]).
    pause: Option<Pause>,
    /// A control packet found the queue full ([`MAX_CONTROL_QUEUED`]).
    overflowed: bool,
    /// Trim guest memory once the guest has been idle for `TRIM_WHEN_IDLE_FOR`.
    trim: bool,
}

impl State {
    fn push_ctrl(&mut self, local: u32, peer: u32, op: u16, flags: u32) {
        if self.ctrl.len() >= MAX_CONTROL_QUEUED {
            self.overflowed = true;
            return;
        }
        self.ctrl.push_back(Ctrl {
            local,
            peer,
            op,
            flags,
        });
    }

    fn has_outgoing(&self) -> bool {
        !self.ctrl.is_empty() || self.conns.values().any(|c| c.sendable())
    }
}

pub struct Hub {
    state: Mutex<State>,
    /// The parked vCPU waits here for packets to deliver.
    guest_work: Condvar,
    /// Host streams wait here for data, credit or state changes.
    host_event: Condvar,
    /// Bumped on every wake-up of either kind, so a waiter can spin briefly on an atomic
    /// before sleeping: a request/response exchange then avoids two futex sleeps.
    guest_seq: AtomicU64,
    host_seq: AtomicU64,
}

/// How long a waiter polls before it sleeps. Short enough that an idle VM costs nothing.
const SPIN: Duration = Duration::from_micros(30);

/// How long a guest must have been idle before a requested trim runs: requests that come
/// in a burst are never held up by one.
const TRIM_WHEN_IDLE_FOR: Duration = Duration::from_millis(10);

/// Polls `seq` for a change from `seen` for at most [`SPIN`].
fn spin_for_change(seq: &AtomicU64, seen: u64) {
    let deadline = Instant::now() + SPIN;
    while seq.load(Ordering::Acquire) == seen && Instant::now() < deadline {
        std::hint::spin_loop();
    }
}

impl Default for Hub {
    fn default() -> Self {
        Hub {
            state: Mutex::new(State {
                next_port: FIRST_LOCAL_PORT,
                ..Default::default()
            }),
            guest_work: Condvar::new(),
            host_event: Condvar::new(),
            guest_seq: AtomicU64::new(0),
            host_seq: AtomicU64::new(0),
        }
    }
}

fn dead_error(reason: &StreamError) -> io::Error {
    io::Error::new(io::ErrorKind::ConnectionAborted, reason.clone())
}

impl Hub {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    fn wake_guest(&self) {
        self.guest_seq.fetch_add(1, Ordering::Release);
        self.guest_work.notify_all();
    }

    fn wake_host(&self) {
        self.host_seq.fetch_add(1, Ordering::Release);
        self.host_event.notify_all();
    }

    /// Opens a stream to `port` in the guest; returns the local (host) port.
    pub fn connect(&self, port: u32, timeout: Duration) -> io::Result<u32> {
        let local = self.open(port)?;
        let mut st = self.lock();
        let deadline = Instant::now() + timeout;
        loop {
            let state = st.conns.get(&local).map(|c| c.state.clone());
            match state {
                Some(ConnState::Established) => return Ok(local),
                Some(ConnState::Closed(why)) => {
                    st.conns.remove(&local);
                    return Err(io::Error::new(io::ErrorKind::ConnectionRefused, why));
                }
                None => return Err(closed()),
                Some(ConnState::Connecting) => {}
            }
            let now = Instant::now();
            if now >= deadline {
                st.conns.remove(&local);
                st.push_ctrl(local, port, OP_RST, 0);
                self.wake_guest();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    StreamError::NotAccepted { port, timeout },
                ));
            }
            st = self.host_event.wait_timeout(st, deadline - now).unwrap().0;
        }
    }

    /// Starts opening a stream to `port` without waiting for the guest to accept: data
    /// written meanwhile goes out once it has, so the handshake overlaps the first request.
    /// A refusal shows up as an error on the first read.
    pub fn open(&self, port: u32) -> io::Result<u32> {
        let mut st = self.lock();
        if let Some(reason) = &st.dead {
            return Err(dead_error(reason));
        }
        if st.conns.len() >= MAX_CONNECTIONS {
            return Err(io::Error::other(StreamError::TooManyConnections));
        }
        let mut local = st.next_port;
        while st.conns.contains_key(&local) {
            local = local.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
        }
        st.next_port = local.checked_add(1).unwrap_or(FIRST_LOCAL_PORT);
        st.conns.insert(
            local,
            Conn {
                peer_port: port,
                state: ConnState::Connecting,
                rx: VecDeque::new(),
                fwd_cnt: 0,
                fwd_cnt_sent: 0,
                tx: VecDeque::new(),
                tx_cnt: 0,
                peer_buf_alloc: 0,
                peer_fwd_cnt: 0,
                peer_done_sending: false,
                host_closed: false,
            },
        );
        st.push_ctrl(local, port, OP_REQUEST, 0);
        self.wake_guest();
        Ok(local)
    }

    /// Reads guest data; `Ok(0)` once the guest shut down its side and everything was read.
    pub fn read(&self, local: u32, buf: &mut [u8], timeout: Option<Duration>) -> io::Result<usize> {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut st = self.lock();
        loop {
            let conn = st.conns.get_mut(&local).ok_or_else(closed)?;
            if !conn.rx.is_empty() {
                let n = buf.len().min(conn.rx.len());
                for (dst, src) in buf.iter_mut().zip(conn.rx.drain(..n)) {
                    *dst = src;
                }
                conn.fwd_cnt = conn.fwd_cnt.wrapping_add(n as u32);
                if conn.fwd_cnt.wrapping_sub(conn.fwd_cnt_sent) >= HOST_BUF_ALLOC / 4 {
                    // Counted as told now, so further reads do not queue duplicates.
                    conn.fwd_cnt_sent = conn.fwd_cnt;
                    let peer = conn.peer_port;
                    st.push_ctrl(local, peer, OP_CREDIT_UPDATE, 0);
                    self.wake_guest();
                }
                return Ok(n);
            }
            if conn.peer_done_sending || buf.is_empty() {
                return Ok(0);
            }
            if let ConnState::Closed(why) = &conn.state {
                return Err(io::Error::new(io::ErrorKind::ConnectionReset, why.clone()));
            }
            if let Some(reason) = &st.dead {
                return Err(dead_error(reason));
            }
            let seen = self.host_seq.load(Ordering::Acquire);
            drop(st);
            spin_for_change(&self.host_seq, seen);
            st = self.lock();
            let conn = st.conns.get(&local).ok_or_else(closed)?;
            if !conn.rx.is_empty() || conn.peer_done_sending || st.dead.is_some() {
                continue;
            }
            st = match deadline {
                None => self.host_event.wait(st).unwrap(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            StreamError::ReadTimeout,
                        ));
                    }
                    self.host_event.wait_timeout(st, deadline - now).unwrap().0
                }
            };
        }
    }

    /// Queues data for the guest, blocking while too much is already queued, until
    /// `deadline` if there is one: a guest that stops reading cannot hold a writer longer.
    pub fn write(&self, local: u32, buf: &[u8], deadline: Option<Instant>) -> io::Result<usize> {
        let mut st = self.lock();
        loop {
            if let Some(reason) = &st.dead {
                return Err(dead_error(reason));
            }
            let conn = st.conns.get_mut(&local).ok_or_else(closed)?;
            if let ConnState::Closed(why) = &conn.state {
                return Err(io::Error::new(io::ErrorKind::BrokenPipe, why.clone()));
            }
            let room = HOST_TX_LIMIT.saturating_sub(conn.tx.len());
            if room > 0 || buf.is_empty() {
                let n = room.min(buf.len());
                conn.tx.extend(&buf[..n]);
                self.wake_guest();
                return Ok(n);
            }
            st = match deadline {
                None => self.host_event.wait(st).unwrap(),
                Some(deadline) => {
                    let now = Instant::now();
                    if now >= deadline {
                        return Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            StreamError::WriteTimeout,
                        ));
                    }
                    self.host_event.wait_timeout(st, deadline - now).unwrap().0
                }
            };
        }
    }

    /// The host stream is gone: finish sending what is queued, then shut down.
    pub fn close(&self, local: u32) {
        let mut st = self.lock();
        let Some(conn) = st.conns.get_mut(&local) else {
            return;
        };
        if !conn.established() {
            st.conns.remove(&local);
            return;
        }
        conn.host_closed = true;
        if conn.tx.is_empty() {
            let peer = conn.peer_port;
            st.push_ctrl(local, peer, OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND);
            self.wake_guest();
        }
    }

    /// Handles one packet from the guest.
    pub fn incoming(&self, pkt: Incoming<'_>) {
        let mut st = self.lock();
        let Some(conn) = st
            .conns
            .get_mut(&pkt.local)
            .filter(|c| c.peer_port == pkt.peer)
        else {
            if pkt.op != OP_RST {
                st.push_ctrl(pkt.local, pkt.peer, OP_RST, 0);
            }
            return;
        };
        conn.peer_buf_alloc = pkt.buf_alloc;
        conn.peer_fwd_cnt = pkt.fwd_cnt;
        let mut reply = None;
        match (pkt.op, &conn.state) {
            (OP_RESPONSE, ConnState::Connecting) => conn.state = ConnState::Established,
            (OP_RW, ConnState::Established) => {
                if conn.rx.len() + pkt.data.len() > HOST_BUF_ALLOC as usize {
                    conn.state = ConnState::Closed(StreamError::CreditOverrun);
                    reply = Some((OP_RST, 0));
                } else {
                    conn.rx.extend(pkt.data);
                }
            }
            (OP_CREDIT_UPDATE, _) => {}
            (OP_CREDIT_REQUEST, ConnState::Established) => reply = Some((OP_CREDIT_UPDATE, 0)),
            (OP_SHUTDOWN, ConnState::Established) => {
                if pkt.flags & SHUTDOWN_SEND != 0 {
                    conn.peer_done_sending = true;
                }
                if pkt.flags & SHUTDOWN_RCV != 0 {
                    conn.tx.clear();
                    conn.state = ConnState::Closed(StreamError::ClosedByGuest);
                    reply = Some((OP_RST, 0));
                }
            }
            (OP_RST, ConnState::Connecting) => {
                conn.state = ConnState::Closed(StreamError::Refused(pkt.peer));
            }
            (OP_RST, _) => {
                conn.peer_done_sending = true;
                conn.state = ConnState::Closed(StreamError::ResetByGuest);
            }
            _ => {
                conn.state = ConnState::Closed(StreamError::UnexpectedOp(pkt.op));
                reply = Some((OP_RST, 0));
            }
        }
        let finished = conn.host_closed && matches!(conn.state, ConnState::Closed(_));
        if finished {
            st.conns.remove(&pkt.local);
        }
        if let Some((op, flags)) = reply {
            st.push_ctrl(pkt.local, pkt.peer, op, flags);
        }
        self.wake_host();
    }

    /// Takes the next packet for the guest, whose RX buffer holds `room` data bytes.
    pub fn next_outgoing(&self, room: usize) -> Option<Outgoing> {
        let mut st = self.lock();
        if let Some(c) = st.ctrl.pop_front() {
            let fwd_cnt = st.conns.get_mut(&c.local).map_or(0, |conn| {
                conn.fwd_cnt_sent = conn.fwd_cnt;
                conn.fwd_cnt
            });
            return Some(Outgoing {
                local: c.local,
                peer: c.peer,
                op: c.op,
                flags: c.flags,
                fwd_cnt,
                data: Vec::new(),
            });
        }
        let (&local, conn) = st.conns.iter_mut().find(|(_, c)| c.sendable())?;
        let n = conn.tx.len().min(conn.credit() as usize).min(room);
        if n == 0 {
            return None;
        }
        let data: Vec<u8> = conn.tx.drain(..n).collect();
        conn.tx_cnt = conn.tx_cnt.wrapping_add(n as u32);
        conn.fwd_cnt_sent = conn.fwd_cnt;
        let out = Outgoing {
            local,
            peer: conn.peer_port,
            op: OP_RW,
            flags: 0,
            fwd_cnt: conn.fwd_cnt,
            data,
        };
        if conn.tx.is_empty() && conn.host_closed {
            st.push_ctrl(local, out.peer, OP_SHUTDOWN, SHUTDOWN_RCV | SHUTDOWN_SEND);
        }
        self.wake_host();
        Some(out)
    }

    /// Whether the guest left more control packets unread than the host keeps.
    pub fn overflowed(&self) -> bool {
        self.lock().overflowed
    }

    /// Control packets waiting for RX buffers.
    pub fn control_queued(&self) -> usize {
        self.lock().ctrl.len()
    }

    pub fn has_outgoing(&self) -> bool {
        self.lock().has_outgoing()
    }

    /// Parks the calling vCPU until there is a packet to deliver, a stop, a pause, or a
    /// requested trim is due.
    pub fn wait_for_outgoing(&self) -> Wake {
        let seen = self.guest_seq.load(Ordering::Acquire);
        spin_for_change(&self.guest_seq, seen);
        let mut st = self.lock();
        loop {
            if st.stop {
                return Wake::Stop;
            }
            let pause = match st.pause {
                Some(Pause::Now) => true,
                Some(Pause::Idle) => st.conns.is_empty() && !st.has_outgoing(),
                None => false,
            };
            if pause {
                st.pause = None;
                return Wake::Pause;
            }
            if st.has_outgoing() {
                return Wake::Work;
            }
            if !st.trim {
                st = self.guest_work.wait(st).unwrap();
                continue;
            }
            let (guard, idle) = self
                .guest_work
                .wait_timeout(st, TRIM_WHEN_IDLE_FOR)
                .unwrap();
            st = guard;
            if idle.timed_out() && !st.stop && st.pause.is_none() && !st.has_outgoing() {
                st.trim = false;
                return Wake::Trim;
            }
        }
    }

    /// Asks the vCPU to pause at its next park, as `when` allows.
    pub fn request_pause(&self, when: Pause) {
        self.lock().pause = Some(when);
        self.wake_guest();
    }

    /// Asks the vCPU to trim guest memory once the guest has been idle a while.
    pub fn request_trim(&self) {
        self.lock().trim = true;
        self.wake_guest();
    }

    /// Wakes a parked vCPU so it sees its stop flag.
    pub fn request_stop(&self) {
        self.lock().stop = true;
        self.wake_guest();
    }

    /// The VM is gone (`how`): every stream fails from now on.
    pub fn kill(&self, how: Arc<dyn Error + Send + Sync>) {
        let mut st = self.lock();
        let reason = StreamError::VmStopped(how);
        st.stop = true;
        for conn in st.conns.values_mut() {
            if !matches!(conn.state, ConnState::Closed(_)) {
                conn.state = ConnState::Closed(reason.clone());
            }
        }
        st.dead = Some(reason);
        st.conns.retain(|_, c| !c.host_closed);
        st.ctrl.clear();
        self.wake_host();
        self.wake_guest();
    }

    /// The guest reset its vsock device: every connection is gone.
    pub fn reset_connections(&self) {
        let mut st = self.lock();
        for conn in st.conns.values_mut() {
            conn.state = ConnState::Closed(StreamError::DeviceReset);
        }
        st.conns.retain(|_, c| !c.host_closed);
        st.ctrl.clear();
        self.wake_host();
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, StreamError::NotConnected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn established(hub: &Arc<Hub>) -> u32 {
        let h = hub.clone();
        let connecting = std::thread::spawn(move || h.connect(52, Duration::from_secs(5)));
        let request = loop {
            if let Some(out) = hub.next_outgoing(0) {
                break out;
            }
            std::thread::yield_now();
        };
        assert_eq!(request.op, OP_REQUEST);
        hub.incoming(packet(request.local, OP_RESPONSE, &[]));
        connecting.join().unwrap().unwrap()
    }

    fn packet(local: u32, op: u16, data: &[u8]) -> Incoming<'_> {
        Incoming {
            local,
            peer: 52,
            op,
            flags: 0,
            buf_alloc: 1 << 20,
            fwd_cnt: 0,
            data,
        }
    }

    #[test]
    fn data_flows_both_ways_within_credit() {
        let hub = Arc::new(Hub::default());
        let local = established(&hub);
        hub.write(local, &[7u8; 100], None).unwrap();
        let out = hub.next_outgoing(40).unwrap();
        assert_eq!(
            (out.op, out.data.len()),
            (OP_RW, 40),
            "bounded by the RX buffer"
        );
        assert_eq!(hub.next_outgoing(1000).unwrap().data.len(), 60);
        hub.incoming(packet(local, OP_RW, b"pong"));
        let mut buf = [0u8; 16];
        assert_eq!(hub.read(local, &mut buf, None).unwrap(), 4);
        assert_eq!(&buf[..4], b"pong");
    }

    #[test]
    fn host_never_sends_beyond_guest_credit() {
        let hub = Arc::new(Hub::default());
        let local = established(&hub);
        hub.incoming(Incoming {
            buf_alloc: 10,
            ..packet(local, OP_CREDIT_UPDATE, &[])
        });
        hub.write(local, &[1u8; 25], None).unwrap();
        assert_eq!(hub.next_outgoing(1000).unwrap().data.len(), 10);
        assert!(hub.next_outgoing(1000).is_none(), "no credit left");
        hub.incoming(Incoming {
            buf_alloc: 10,
            fwd_cnt: 10,
            ..packet(local, OP_CREDIT_UPDATE, &[])
        });
        assert_eq!(hub.next_outgoing(1000).unwrap().data.len(), 10);
    }

    #[test]
    fn a_guest_overrunning_host_credit_loses_the_connection() {
        let hub = Arc::new(Hub::default());
        let local = established(&hub);
        let flood = vec![0u8; HOST_BUF_ALLOC as usize + 1];
        hub.incoming(packet(local, OP_RW, &flood));
        assert_eq!(hub.next_outgoing(0).unwrap().op, OP_RST);
        let err = hub.read(local, &mut [0u8; 4], None).unwrap_err();
        assert!(err.to_string().contains("credit"), "{err}");
    }

    #[test]
    fn refused_and_dead_connections_report_why() {
        let hub = Arc::new(Hub::default());
        let h = hub.clone();
        let connecting = std::thread::spawn(move || h.connect(9, Duration::from_secs(5)));
        let request = loop {
            if let Some(out) = hub.next_outgoing(0) {
                break out;
            }
            std::thread::yield_now();
        };
        hub.incoming(Incoming {
            peer: 9,
            ..packet(request.local, OP_RST, &[])
        });
        let err = connecting.join().unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);

        let local = established(&hub);
        hub.kill(Arc::new(io::Error::other("guest fault")));
        let err = hub.read(local, &mut [0u8; 4], None).unwrap_err();
        assert!(err.to_string().contains("guest fault"), "{err}");
        assert!(hub.connect(52, Duration::from_millis(10)).is_err());
    }

    #[test]
    fn a_guest_that_reads_no_control_packets_cannot_grow_the_queue() {
        let hub = Hub::default();
        let stray = |port: usize| packet(5000 + port as u32, OP_RW, b"stray");
        for port in 0..MAX_CONTROL_QUEUED {
            hub.incoming(stray(port));
        }
        assert!(
            !hub.overflowed(),
            "a full queue is still within the contract"
        );
        for port in MAX_CONTROL_QUEUED..10 * MAX_CONTROL_QUEUED {
            hub.incoming(stray(port));
        }
        assert!(hub.overflowed());
        assert_eq!(hub.lock().ctrl.len(), MAX_CONTROL_QUEUED);
    }

    #[test]
    fn a_write_to_a_guest_that_reads_nothing_ends_at_its_deadline() {
        let hub = Arc::new(Hub::default());
        let local = established(&hub);
        let chunk = vec![0u8; 64 << 10];
        let deadline = Instant::now() + Duration::from_millis(100);
        let mut queued = 0;
        let err = loop {
            match hub.write(local, &chunk, Some(deadline)) {
                Ok(n) => queued += n,
                Err(e) => break e,
            }
            assert!(queued <= 64 << 20, "the host queued {queued} bytes");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        assert!(Instant::now() < deadline + Duration::from_secs(1));
        assert_eq!(queued, HOST_TX_LIMIT, "bounded host memory");
    }

    #[test]
    fn packets_for_unknown_connections_are_reset() {
        let hub = Hub::default();
        hub.incoming(packet(4242, OP_RW, b"stray"));
        let out = hub.next_outgoing(0).unwrap();
        assert_eq!((out.op, out.local), (OP_RST, 4242));
        hub.incoming(packet(4242, OP_RST, &[]));
        assert!(
            hub.next_outgoing(0).is_none(),
            "never answer a reset with a reset"
        );
    }
}
