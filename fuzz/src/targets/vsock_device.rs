//! The virtio-vsock device and its virtio-mmio queues, driven as a hostile guest would:
//! register writes, guest memory (descriptor tables, rings, packet headers) and doorbells,
//! interleaved with host streams that give the device packets to deliver.
//!
//! The input is a program of operations (see [`Op`]). Invariants: the device never panics
//! whatever the guest wrote (descriptor loops, lengths, addresses, ring indexes); a guest
//! error ends the program, as it ends the VM; the control packets the host holds for the
//! guest never exceed their bound; a kick never parks.

use ember_vmm::fuzzing::{VsockHarness, GUEST_CID, MEMORY};

use crate::{error_label, Target};

pub const TARGET: Target = Target {
    name: "vsock_device",
    fed_by: "a guest, through its vsock device's registers, rings and packets",
    seeds,
    dictionary: &[
        &[3, 0, 0, 0, 0, 0, 0, 0],
        &[2, 0, 0, 0, 0, 0, 0, 0],
        &[52, 0, 0, 0],
        &[0xff, 0xff, 0xff, 0xff],
        &[1, 0, 2, 0],
    ],
    run,
};

/// The operations of a program, by their first byte modulo 11.
#[derive(Clone, Copy)]
enum Op {
    /// `addr: u16`, `len: u8`, bytes: raw guest memory.
    Memory = 0,
    /// `offset: u8` (× 4), `width: u8`, `value: u32`: a register write.
    Register = 1,
    Kick = 2,
    /// `size: u8` (2^(n % 9)), `rx: u16`, `tx: u16`: the standard bring-up with rings there.
    Activate = 3,
    /// `port: u8` (0 is the frame port 52).
    Open = 4,
    /// `stream: u8`, `len: u16`.
    Write = 5,
    /// `stream: u8`.
    Read = 6,
    /// `stream: u8`.
    Close = 7,
    /// `queue: u8`, `index: u8`, `addr: u32`, `len: u32`, `flags: u16`, `next: u16`.
    Descriptor = 8,
    /// `queue: u8`, `head: u16`, `bump: u8`: offers `head` (and moves the index by `bump`).
    Offer = 9,
    /// `addr: u16`, `src_cid: u8`, `ports: u8, u8`, `op: u8`, `len: u32`, `credit: u32`:
    /// a vsock packet header.
    Header = 10,
}

const OPS: u8 = 11;

/// Where the last bring-up put the queues, so descriptors and offers can find them.
#[derive(Clone, Copy, Default)]
struct Ring {
    size: u16,
    desc: u64,
    avail: u64,
    avail_idx: u16,
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn bytes(&mut self, n: usize) -> &[u8] {
        let n = n.min(self.0.len());
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        head
    }

    fn u8(&mut self) -> u8 {
        self.bytes(1).first().copied().unwrap_or(0)
    }

    fn u16(&mut self) -> u16 {
        u16::from(self.u8()) | (u16::from(self.u8()) << 8)
    }

    fn u32(&mut self) -> u32 {
        u32::from(self.u16()) | (u32::from(self.u16()) << 16)
    }
}

fn run(input: &[u8]) -> String {
    let mut h = VsockHarness::default();
    let mut rings = [Ring::default(); 2];
    let mut input = Reader(input);
    let mut kicks = 0;
    while let Some((&op, _)) = input.0.split_first() {
        input.0 = &input.0[1..];
        let result = step(&mut h, &mut rings, op % OPS, &mut input);
        if op % OPS == Op::Kick as u8 {
            kicks += 1;
        }
        h.control_queued();
        if let Err(e) = result {
            return error_label(&e);
        }
    }
    let mut status = [0u8; 4];
    h.mmio_read(0x70, &mut status);
    let active = u32::from_le_bytes(status) & 4 != 0;
    format!(
        "ok:active={active}:kicked={}:queued={}",
        kicks.min(2),
        h.control_queued().min(2)
    )
}

fn step(
    h: &mut VsockHarness,
    rings: &mut [Ring; 2],
    op: u8,
    input: &mut Reader<'_>,
) -> Result<(), ember_vmm::VsockError> {
    match op {
        x if x == Op::Memory as u8 => {
            let addr = u64::from(input.u16());
            let len = usize::from(input.u8());
            h.write_memory(addr, input.bytes(len));
        }
        x if x == Op::Register as u8 => {
            let offset = u64::from(input.u8()) * 4;
            let width = [4, 1, 2, 8][usize::from(input.u8() % 4)];
            let value = u64::from(input.u32()) | (u64::from(input.u32()) << 32);
            h.mmio_write(offset, &value.to_le_bytes()[..width])?;
        }
        x if x == Op::Kick as u8 => h.kick()?,
        x if x == Op::Activate as u8 => {
            let size = 1u16 << (input.u8() % 9);
            let bases = [input.u16(), input.u16()];
            activate(h, rings, size, bases)?;
        }
        x if x == Op::Open as u8 => {
            let port = match input.u8() {
                0 => 52,
                p => u32::from(p),
            };
            h.host_open(port);
        }
        x if x == Op::Write as u8 => {
            let stream = usize::from(input.u8());
            let len = usize::from(input.u16());
            h.host_write(stream, &vec![0x5a; len]);
        }
        x if x == Op::Read as u8 => {
            h.host_read(usize::from(input.u8()));
        }
        x if x == Op::Close as u8 => h.host_close(usize::from(input.u8())),
        x if x == Op::Descriptor as u8 => {
            let ring = rings[usize::from(input.u8() & 1)];
            let index = u64::from(input.u8());
            let mut desc = Vec::with_capacity(16);
            desc.extend_from_slice(&u64::from(input.u32()).to_le_bytes());
            desc.extend_from_slice(&input.u32().to_le_bytes());
            desc.extend_from_slice(&input.u16().to_le_bytes());
            desc.extend_from_slice(&input.u16().to_le_bytes());
            if ring.size > 0 {
                h.write_memory(ring.desc + 16 * (index % u64::from(ring.size)), &desc);
            }
        }
        x if x == Op::Offer as u8 => {
            let queue = usize::from(input.u8() & 1);
            let head = input.u16();
            let bump = u16::from(input.u8() % 4);
            let ring = &mut rings[queue];
            if ring.size > 0 {
                let slot = ring.avail + 4 + 2 * u64::from(ring.avail_idx % ring.size);
                h.write_memory(slot, &head.to_le_bytes());
                // Usually one more chain; sometimes an index that skips or overshoots.
                ring.avail_idx = ring.avail_idx.wrapping_add(match bump {
                    0 => ring.size.wrapping_add(1),
                    n => n,
                });
                h.write_memory(ring.avail + 2, &ring.avail_idx.to_le_bytes());
            }
        }
        _ => {
            let addr = u64::from(input.u16());
            let src_cid = match input.u8() {
                0 => GUEST_CID,
                c => u64::from(c),
            };
            let mut header = [0u8; 44];
            header[0..8].copy_from_slice(&src_cid.to_le_bytes());
            header[8..16].copy_from_slice(&2u64.to_le_bytes());
            header[16..20].copy_from_slice(&u32::from(input.u8()).to_le_bytes());
            header[20..24].copy_from_slice(&(1024 + u32::from(input.u8())).to_le_bytes());
            header[30..32].copy_from_slice(&u16::from(input.u8() % 9).to_le_bytes());
            header[24..28].copy_from_slice(&input.u32().to_le_bytes());
            header[28..30].copy_from_slice(&1u16.to_le_bytes());
            header[36..40].copy_from_slice(&input.u32().to_le_bytes());
            h.write_memory(addr, &header);
        }
    }
    Ok(())
}

/// The bring-up a driver does: status, VERSION_1, each queue's size and rings, DRIVER_OK.
fn activate(
    h: &mut VsockHarness,
    rings: &mut [Ring; 2],
    size: u16,
    bases: [u16; 2],
) -> Result<(), ember_vmm::VsockError> {
    let mut reg = |offset: u64, value: u32| h.mmio_write(offset, &value.to_le_bytes());
    reg(0x70, 3)?;
    reg(0x24, 1)?;
    reg(0x20, 1)?;
    reg(0x70, 3 | 8)?;
    for (q, base) in bases.into_iter().enumerate() {
        let desc = u64::from(base) & !15;
        let avail = desc + 16 * u64::from(size);
        let used = (avail + 6 + 2 * u64::from(size)).next_multiple_of(4);
        reg(0x30, q as u32)?;
        reg(0x38, u32::from(size))?;
        reg(0x80, desc as u32)?;
        reg(0x90, avail as u32)?;
        reg(0xa0, used as u32)?;
        reg(0x44, 1)?;
        rings[q] = Ring {
            size,
            desc,
            avail,
            avail_idx: 0,
        };
    }
    reg(0x70, 3 | 8 | 4)
}

/// Builds programs for the seeds.
#[derive(Default)]
struct Program(Vec<u8>);

impl Program {
    fn op(mut self, op: Op, args: &[&[u8]]) -> Self {
        self.0.push(op as u8);
        for a in args {
            self.0.extend_from_slice(a);
        }
        self
    }

    fn activate(self, size_log2: u8, rx: u16, tx: u16) -> Self {
        self.op(
            Op::Activate,
            &[&[size_log2], &rx.to_le_bytes(), &tx.to_le_bytes()],
        )
    }

    fn descriptor(self, queue: u8, index: u8, addr: u32, len: u32, flags: u16, next: u16) -> Self {
        self.op(
            Op::Descriptor,
            &[
                &[queue, index],
                &addr.to_le_bytes(),
                &len.to_le_bytes(),
                &flags.to_le_bytes(),
                &next.to_le_bytes(),
            ],
        )
    }

    fn offer(self, queue: u8, head: u16) -> Self {
        self.op(Op::Offer, &[&[queue], &head.to_le_bytes(), &[1]])
    }

    /// A guest packet header at `addr`: op, length, credit.
    fn header(self, addr: u16, op: u8, len: u32, credit: u32) -> Self {
        self.op(
            Op::Header,
            &[
                &addr.to_le_bytes(),
                &[0, 52, 0, op],
                &len.to_le_bytes(),
                &credit.to_le_bytes(),
            ],
        )
    }
}

fn seeds() -> Vec<Vec<u8>> {
    const WRITE: u16 = 2;
    const NEXT: u16 = 1;
    // Rings of 16 at 0x1000 (RX) and 0x2000 (TX); RX buffers at 0x4000..0x8000.
    let base = || {
        (0..4u8).fold(Program::default().activate(4, 0x1000, 0x2000), |p, i| {
            p.descriptor(0, i, 0x4000 + u32::from(i) * 0x1000, 0x1000, WRITE, 0)
                .offer(0, u16::from(i))
        })
    };
    // The host opens, the guest accepts and both send data.
    let conversation = base()
        .op(Op::Open, &[&[0]])
        .op(Op::Kick, &[])
        .header(0x9000, 2, 0, 1 << 16)
        .descriptor(1, 0, 0x9000, 44, 0, 0)
        .offer(1, 0)
        .op(Op::Kick, &[])
        .op(Op::Write, &[&[0], &300u16.to_le_bytes()])
        .op(Op::Kick, &[])
        .header(0x9100, 5, 8, 1 << 16)
        .descriptor(1, 1, 0x9100, 44, NEXT, 2)
        .descriptor(1, 2, 0x9200, 8, 0, 0)
        .offer(1, 1)
        .op(Op::Kick, &[])
        .op(Op::Read, &[&[0]])
        .op(Op::Close, &[&[0]])
        .op(Op::Kick, &[]);
    // A TX chain that loops on itself, and one that points outside guest memory.
    let looped = base()
        .header(0x9000, 5, 8, 0)
        .descriptor(1, 0, 0x9000, 44, NEXT, 0)
        .offer(1, 0)
        .op(Op::Kick, &[]);
    let outside = base()
        .descriptor(1, 0, MEMORY as u32 - 8, 44, 0, 0)
        .offer(1, 0)
        .op(Op::Kick, &[]);
    // Stray packets with no RX buffers left: resets pile up.
    let strays = (0..40).fold(
        Program::default()
            .activate(4, 0x1000, 0x2000)
            .header(0x9000, 5, 0, 0),
        |p, i| {
            p.descriptor(1, i % 16, 0x9000, 44, 0, 0)
                .offer(1, u16::from(i % 16))
                .op(Op::Kick, &[])
        },
    );
    vec![conversation.0, looped.0, outside.0, strays.0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_reach_different_outcomes() {
        let outcomes: Vec<String> = seeds().iter().map(|s| run(s)).collect();
        assert!(outcomes[0].starts_with("ok:active=true"), "{outcomes:?}");
        // A chain whose data descriptor is its header again ends; it is read once.
        assert!(
            outcomes[1].starts_with("ok:"),
            "a descriptor loop: {outcomes:?}"
        );
        assert_eq!(
            outcomes[2], "err:MalformedTx",
            "outside memory: {outcomes:?}"
        );
        assert!(
            outcomes[3].ends_with("queued=2"),
            "stray resets: {outcomes:?}"
        );
    }
}
