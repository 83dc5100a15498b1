//! The frame server: vsock connections on the frame port, flow control, and the requests.
//!
//! The loop is: take what the host delivered, answer every complete frame, queue the
//! replies, then one doorbell that both sends them and sleeps until the host has more.

use alloc::collections::VecDeque;
use alloc::rc::Rc;
use alloc::string::ToString;
use alloc::vec;
use alloc::vec::Vec;

use ember_wire::boot::{exit_code, flags, BootInfo};
use ember_wire::frame::{Decoder, ErrorCode, Frame, Kind, HEADER_LEN};
use ember_wire::function::{InvokeRequest, LoadRequest};
use ember_wire::hostile::{self, Mode};
use ember_wire::info::GuestInfo;
use ember_wire::layout::GUEST_FRAME_PORT;

use crate::arch;
use crate::runtime::{Run, Runtime};
use crate::vsock::{Header, Payload, Vsock, MAX_PACKET_DATA};
use ember_wire::virtio::vsock::{
    OP_CREDIT_REQUEST, OP_CREDIT_UPDATE, OP_REQUEST, OP_RESPONSE, OP_RST, OP_RW, OP_SHUTDOWN,
    SHUTDOWN_RCV, SHUTDOWN_SEND,
};

/// Receive buffer advertised per connection.
const BUF_ALLOC: u32 = 1 << 20;
/// Stop decoding new requests while this much reply data waits for host credit.
const OUT_LIMIT: usize = 1 << 20;
/// Replies up to this size go out as one packet together with their header.
const COALESCE: usize = 4096;
const MAX_CONNECTIONS: usize = 8;

struct Conn {
    peer: u32,
    /// Received bytes not yet decoded; bounded by the credit we advertise.
    inbox: VecDeque<u8>,
    decoder: Decoder,
    fwd_cnt: u32,
    fwd_cnt_sent: u32,
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    tx_cnt: u32,
    ctrl: VecDeque<(u16, u32)>,
    out: VecDeque<(Rc<Vec<u8>>, usize)>,
    /// Send what is queued, then shut the connection down.
    closing: bool,
}

impl Conn {
    fn new(peer: u32, h: &Header) -> Conn {
        Conn {
            peer,
            inbox: VecDeque::new(),
            decoder: Decoder::new(),
            fwd_cnt: 0,
            fwd_cnt_sent: 0,
            peer_buf_alloc: h.buf_alloc,
            peer_fwd_cnt: h.fwd_cnt,
            tx_cnt: 0,
            ctrl: VecDeque::new(),
            out: VecDeque::new(),
            closing: false,
        }
    }

    fn credit(&self) -> usize {
        self.peer_buf_alloc
            .saturating_sub(self.tx_cnt.wrapping_sub(self.peer_fwd_cnt)) as usize
    }

    fn pending_out(&self) -> usize {
        self.out.iter().map(|(b, off)| b.len() - off).sum()
    }

    fn queue_frame(&mut self, frame: Frame) {
        let header = frame.header();
        if frame.payload.len() <= COALESCE {
            let mut one = Vec::with_capacity(HEADER_LEN + frame.payload.len());
            one.extend_from_slice(&header);
            one.extend_from_slice(&frame.payload);
            self.out.push_back((Rc::new(one), 0));
        } else {
            self.out.push_back((Rc::new(header.to_vec()), 0));
            self.out.push_back((Rc::new(frame.payload), 0));
        }
    }
}

/// What a request asks of the server beyond its reply.
enum After {
    Nothing,
    PowerOff,
}

pub struct Server {
    dev: Vsock,
    runtime: Runtime,
    conns: Vec<Conn>,
    /// RSTs for packets that belong to no connection: (peer port, our port).
    strays: Vec<(u32, u32)>,
    info: BootInfo,
    power_off: bool,
    /// Test only: the hostile mode the init phase asked for (see [`ember_wire::hostile`]).
    hostile: Option<Mode>,
}

impl Server {
    pub fn new(dev: Vsock, info: BootInfo) -> Server {
        let heap = (info.heap_end - info.heap_start) as usize;
        Server {
            dev,
            runtime: Runtime::new(info.tsc_khz, heap),
            conns: Vec::new(),
            strays: Vec::new(),
            info,
            power_off: false,
            hostile: None,
        }
    }

    pub fn run(mut self) -> ! {
        loop {
            let Server {
                dev, conns, strays, ..
            } = &mut self;
            dev.receive(|h, data| on_packet(conns, strays, h, data));
            for i in 0..self.conns.len() {
                self.serve(i);
            }
            self.flush();
            if self.power_off {
                self.dev.kick();
                arch::power_off(exit_code::SHUTDOWN);
            }
            self.dev.kick_and_wait();
        }
    }

    /// Decodes and answers the frames waiting on connection `i`.
    fn serve(&mut self, i: usize) {
        loop {
            if let Some(mode @ (Mode::Stall | Mode::StallSpin)) = self.hostile {
                if !self.conns[i].inbox.is_empty() {
                    self.stall(i, mode);
                }
            }
            let conn = &mut self.conns[i];
            if conn.closing || conn.inbox.is_empty() || conn.pending_out() >= OUT_LIMIT {
                break;
            }
            let (mut input, _) = conn.inbox.as_slices();
            let before = input.len();
            let result = conn.decoder.push(&mut input);
            let consumed = before - input.len();
            conn.inbox.drain(..consumed);
            conn.fwd_cnt = conn.fwd_cnt.wrapping_add(consumed as u32);
            match result {
                Ok(None) => {}
                Ok(Some(frame)) => {
                    let (replies, after) = self.handle(frame);
                    for reply in replies {
                        self.conns[i].queue_frame(reply);
                    }
                    if let After::PowerOff = after {
                        self.power_off = true;
                    }
                }
                Err(e) => {
                    conn.queue_frame(Frame::error(ErrorCode::Malformed, &e.to_string()));
                    conn.closing = true;
                }
            }
        }
        let conn = &mut self.conns[i];
        if conn.fwd_cnt.wrapping_sub(conn.fwd_cnt_sent) >= BUF_ALLOC / 2 {
            conn.ctrl.push_back((OP_CREDIT_UPDATE, 0));
        }
    }

    /// Answers one request: any number of log frames, then exactly one reply.
    fn handle(&mut self, frame: Frame) -> (Vec<Frame>, After) {
        let test_frames = self.info.flags & flags::TEST_FRAMES != 0;
        let reply = match Kind::from_u8(frame.kind) {
            Some(Kind::Ping) => Frame::new(Kind::Pong, Vec::new()),
            Some(Kind::Echo) => Frame::new(Kind::EchoReply, frame.payload),
            Some(Kind::Info) => {
                let info = GuestInfo {
                    version: env!("CARGO_PKG_VERSION").into(),
                    mem_size: self.info.mem_size,
                    heap_size: self.info.heap_end - self.info.heap_start,
                    cpl: arch::cpl(),
                };
                Frame::new(Kind::InfoReply, info.encode())
            }
            Some(Kind::Load) => match LoadRequest::decode(&frame.payload) {
                Ok(req) => {
                    if test_frames {
                        self.hostile = req
                            .env
                            .iter()
                            .find(|(k, _)| k == hostile::ENV)
                            .and_then(|(_, v)| Mode::parse(v));
                    }
                    return (
                        with_log(self.runtime.load(req), Kind::LoadReply),
                        After::Nothing,
                    );
                }
                Err(e) => Frame::error(ErrorCode::Malformed, &e.to_string()),
            },
            Some(Kind::Invoke) => match InvokeRequest::decode(&frame.payload) {
                Ok(req) => {
                    self.misbehave();
                    return (
                        with_log(self.runtime.invoke(req), Kind::InvokeReply),
                        After::Nothing,
                    );
                }
                Err(e) => Frame::error(ErrorCode::Malformed, &e.to_string()),
            },
            Some(Kind::Shutdown) => {
                return (
                    vec![Frame::new(Kind::ShutdownAck, Vec::new())],
                    After::PowerOff,
                )
            }
            Some(Kind::TestFault) if test_frames => match frame.payload.first() {
                Some(1) => arch::unmapped_read(),
                Some(2) => {
                    arch::overflow_stack(0);
                    unreachable!("the stack overflow faults")
                }
                _ => arch::invalid_opcode(),
            },
            Some(Kind::TestSpin) if test_frames => loop {
                core::hint::spin_loop();
            },
            Some(Kind::TestCpuid) if test_frames => {
                let mut out = Vec::new();
                for pair in frame.payload.chunks_exact(8) {
                    let leaf = u32::from_le_bytes([pair[0], pair[1], pair[2], pair[3]]);
                    let sub = u32::from_le_bytes([pair[4], pair[5], pair[6], pair[7]]);
                    for reg in arch::cpuid(leaf, sub) {
                        out.extend_from_slice(&reg.to_le_bytes());
                    }
                }
                Frame::new(Kind::TestCpuidReply, out)
            }
            Some(Kind::TestFault | Kind::TestSpin | Kind::TestCpuid) => {
                Frame::error(ErrorCode::NotAllowed, "test frames are disabled in this VM")
            }
            _ => Frame::error(ErrorCode::UnknownKind, "not a request kind"),
        };
        (vec![reply], After::Nothing)
    }

    /// Test only: stops reading connection `i` for good. `Stall` advertises no credit and
    /// parks, throwing away whatever arrives; `StallSpin` spins in ring 3.
    fn stall(&mut self, i: usize, mode: Mode) -> ! {
        if mode == Mode::StallSpin {
            loop {
                core::hint::spin_loop();
            }
        }
        let peer = self.conns[i].peer;
        let none = Header {
            buf_alloc: 0,
            ..header(peer, OP_CREDIT_UPDATE, 0, 0, 0)
        };
        self.dev.send(none, None);
        loop {
            self.dev.kick_and_wait();
            self.dev.receive(|_, _| {});
        }
    }

    /// Test only: what an invocation does in the hostile modes that act at invocation.
    fn misbehave(&mut self) {
        match self.hostile {
            Some(Mode::FloodSerial) => {
                for n in 0..hostile::SERIAL_FLOOD_LINES {
                    crate::log!("hostile guest: serial flood line {}", n);
                }
            }
            Some(Mode::FloodControl) => {
                // Never takes another packet, so the host's resets pile up.
                let mut port = 0u32;
                loop {
                    port = port.wrapping_add(1);
                    let stray = header(0x4000_0000 | (port & 0xffff), OP_RW, 0, 0, 0);
                    self.dev.send(stray, None);
                }
            }
            Some(Mode::BadRing) => loop {
                self.dev.corrupt_tx_and_kick();
            },
            _ => {}
        }
    }

    /// Moves queued control packets and reply data (within credit) to the TX queue.
    fn flush(&mut self) {
        for (peer, port) in self.strays.drain(..) {
            let h = header(peer, OP_RST, 0, 0, 0);
            self.dev.send(
                Header {
                    src_port: port,
                    ..h
                },
                None,
            );
        }
        let mut i = 0;
        while i < self.conns.len() {
            let conn = &mut self.conns[i];
            while let Some((op, flags)) = conn.ctrl.pop_front() {
                conn.fwd_cnt_sent = conn.fwd_cnt;
                self.dev
                    .send(header(conn.peer, op, flags, 0, conn.fwd_cnt), None);
            }
            loop {
                let credit = conn.credit();
                let Some((buf, offset)) = conn.out.front_mut() else {
                    break;
                };
                let n = (buf.len() - *offset).min(credit).min(MAX_PACKET_DATA);
                if n == 0 {
                    break;
                }
                let payload = Payload {
                    buf: buf.clone(),
                    offset: *offset,
                    len: n,
                };
                *offset += n;
                if *offset == buf.len() {
                    conn.out.pop_front();
                }
                conn.tx_cnt = conn.tx_cnt.wrapping_add(n as u32);
                conn.fwd_cnt_sent = conn.fwd_cnt;
                self.dev
                    .send(header(conn.peer, OP_RW, 0, n, conn.fwd_cnt), Some(payload));
            }
            if conn.closing && conn.out.is_empty() {
                self.dev.send(
                    header(
                        conn.peer,
                        OP_SHUTDOWN,
                        SHUTDOWN_RCV | SHUTDOWN_SEND,
                        0,
                        conn.fwd_cnt,
                    ),
                    None,
                );
                self.conns.swap_remove(i);
            } else {
                i += 1;
            }
        }
    }
}

/// The function's log as `Log` frames (at most one packet each), then the reply.
fn with_log(run: Run, reply: Kind) -> Vec<Frame> {
    let mut frames: Vec<Frame> = run
        .log
        .chunks(MAX_PACKET_DATA - HEADER_LEN)
        .map(|chunk| Frame::new(Kind::Log, chunk.to_vec()))
        .collect();
    frames.push(Frame::new(reply, run.outcome.encode()));
    frames
}

fn header(peer: u32, op: u16, flags: u32, len: usize, fwd_cnt: u32) -> Header {
    Header {
        src_port: GUEST_FRAME_PORT,
        dst_port: peer,
        op,
        flags,
        len: len as u32,
        buf_alloc: BUF_ALLOC,
        fwd_cnt,
        ..Header::default()
    }
}

/// Applies one packet from the host to the connection table.
fn on_packet(conns: &mut Vec<Conn>, strays: &mut Vec<(u32, u32)>, h: &Header, data: &[u8]) {
    let found = conns
        .iter()
        .position(|c| c.peer == h.src_port && h.dst_port == GUEST_FRAME_PORT);
    let Some(i) = found else {
        let accept =
            h.op == OP_REQUEST && h.dst_port == GUEST_FRAME_PORT && conns.len() < MAX_CONNECTIONS;
        if accept {
            let mut conn = Conn::new(h.src_port, h);
            conn.ctrl.push_back((OP_RESPONSE, 0));
            conns.push(conn);
        } else if h.op != OP_RST {
            strays.push((h.src_port, h.dst_port));
        }
        return;
    };
    let conn = &mut conns[i];
    conn.peer_buf_alloc = h.buf_alloc;
    conn.peer_fwd_cnt = h.fwd_cnt;
    match h.op {
        OP_RW if conn.inbox.len() + data.len() <= BUF_ALLOC as usize => conn.inbox.extend(data),
        OP_CREDIT_UPDATE => {}
        OP_CREDIT_REQUEST => conn.ctrl.push_back((OP_CREDIT_UPDATE, 0)),
        OP_RST => {
            conns.swap_remove(i);
        }
        // SHUTDOWN, a duplicate REQUEST, a credit overrun or an unknown op: reset.
        _ => {
            strays.push((h.src_port, h.dst_port));
            conns.swap_remove(i);
        }
    }
}
