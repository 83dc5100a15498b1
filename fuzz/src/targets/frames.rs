//! The frame stream decoder both ends of the vsock channel run on what the other sent.
//!
//! Invariants: however the stream is split into pieces, the decoder yields the same frames
//! and the same error; every frame re-encodes to exactly the bytes it was decoded from.

use ember_wire::frame::{Decoder, Frame, FrameError, Kind};

use crate::{error_label, Target};

pub const TARGET: Target = Target {
    name: "frames",
    fed_by: "a guest (host side) or the host (guest side), over vsock",
    seeds,
    dictionary: &[
        &[1, 3, 0, 0],
        &[1, 0, 0, 0, 0, 0, 0, 0],
        &[0xff, 0xff, 0x6f, 0x00],
    ],
    run,
};

fn seeds() -> Vec<Vec<u8>> {
    let frames = [
        Frame::new(Kind::Ping, vec![]),
        Frame::new(Kind::Echo, b"hello".to_vec()),
        Frame::new(Kind::Info, vec![]),
    ];
    vec![
        frames.iter().flat_map(Frame::encode).collect(),
        [vec![3], Frame::new(Kind::Echo, vec![7; 300]).encode()].concat(),
    ]
}

/// The first byte is the piece size of the split run; the rest is the stream.
fn run(input: &[u8]) -> String {
    let Some((&piece, stream)) = input.split_first() else {
        return "empty".to_owned();
    };
    let whole = decode(stream, stream.len().max(1));
    let split = decode(stream, usize::from(piece).max(1));
    assert_eq!(whole, split, "result depends on how the stream was split");
    let (frames, error) = whole;
    let encoded: Vec<u8> = frames.iter().flat_map(Frame::encode).collect();
    assert!(
        stream.starts_with(&encoded),
        "decoded frames do not re-encode to the stream they came from"
    );
    match error {
        Some(err) => error_label(&err),
        None => format!("ok:{}", frames.len().min(3)),
    }
}

fn decode(stream: &[u8], piece: usize) -> (Vec<Frame>, Option<FrameError>) {
    let mut decoder = Decoder::new();
    let mut frames = Vec::new();
    for chunk in stream.chunks(piece) {
        let mut rest = chunk;
        while !rest.is_empty() {
            match decoder.push(&mut rest) {
                Ok(Some(frame)) => frames.push(frame),
                Ok(None) => {}
                Err(err) => return (frames, Some(err)),
            }
        }
    }
    (frames, None)
}
