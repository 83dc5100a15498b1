//! Byte-level mutations: the classic set (bit flips, interesting integers, inserts,
//! deletes, duplication, splicing, dictionary tokens), a few stacked per input.

use rand::Rng;

/// Values that sit on boundaries: lengths, indexes and counts go wrong around them.
const INTERESTING: &[u64] = &[
    0,
    1,
    0x7f,
    0x80,
    0xff,
    0x100,
    0x7fff,
    0x8000,
    0xffff,
    0x1_0000,
    0x7fff_ffff,
    0x8000_0000,
    0xffff_ffff,
    u64::MAX,
    u64::MAX - 1,
];

/// A mutant of `base`, at most `max_len` bytes long.
pub(crate) fn mutate(
    rng: &mut impl Rng,
    base: &[u8],
    other: &[u8],
    dictionary: &[&[u8]],
    max_len: usize,
) -> Vec<u8> {
    let mut out = base.to_vec();
    let rounds = 1 << rng.gen_range(0..4);
    for _ in 0..rounds {
        match rng.gen_range(0..9) {
            0 => flip_bit(rng, &mut out),
            1 => set_byte(rng, &mut out),
            2 => set_integer(rng, &mut out),
            3 => insert_random(rng, &mut out),
            4 => delete_range(rng, &mut out),
            5 => duplicate_range(rng, &mut out),
            6 => splice(rng, &mut out, other),
            _ => insert_token(rng, &mut out, dictionary),
        }
    }
    out.truncate(max_len);
    out
}

fn flip_bit(rng: &mut impl Rng, out: &mut [u8]) {
    if !out.is_empty() {
        let at = rng.gen_range(0..out.len());
        out[at] ^= 1 << rng.gen_range(0..8);
    }
}

fn set_byte(rng: &mut impl Rng, out: &mut [u8]) {
    if !out.is_empty() {
        let at = rng.gen_range(0..out.len());
        out[at] = rng.gen();
    }
}

/// Overwrites 1, 2, 4 or 8 bytes with a boundary value, either endianness.
fn set_integer(rng: &mut impl Rng, out: &mut [u8]) {
    let width = 1 << rng.gen_range(0..4);
    if out.len() < width {
        return;
    }
    let value = INTERESTING[rng.gen_range(0..INTERESTING.len())];
    let bytes = if rng.gen() {
        value.to_le_bytes()
    } else {
        value.to_be_bytes()
    };
    let at = rng.gen_range(0..=out.len() - width);
    let from = if rng.gen() { 0 } else { 8 - width };
    out[at..at + width].copy_from_slice(&bytes[from..from + width]);
}

fn insert_random(rng: &mut impl Rng, out: &mut Vec<u8>) {
    let at = rng.gen_range(0..=out.len());
    let len = rng.gen_range(1..=16);
    let bytes: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
    out.splice(at..at, bytes);
}

fn delete_range(rng: &mut impl Rng, out: &mut Vec<u8>) {
    if out.is_empty() {
        return;
    }
    let at = rng.gen_range(0..out.len());
    let len = rng.gen_range(1..=(out.len() - at).min(64));
    out.drain(at..at + len);
}

fn duplicate_range(rng: &mut impl Rng, out: &mut Vec<u8>) {
    if out.is_empty() {
        return;
    }
    let at = rng.gen_range(0..out.len());
    let len = rng.gen_range(1..=(out.len() - at).min(256));
    let copy = out[at..at + len].to_vec();
    let to = rng.gen_range(0..=out.len());
    out.splice(to..to, copy);
}

/// Replaces the tail of `out` from a random point with the tail of `other`.
fn splice(rng: &mut impl Rng, out: &mut Vec<u8>, other: &[u8]) {
    if other.is_empty() {
        return;
    }
    let at = rng.gen_range(0..=out.len());
    let from = rng.gen_range(0..other.len());
    out.truncate(at);
    out.extend_from_slice(&other[from..]);
}

fn insert_token(rng: &mut impl Rng, out: &mut Vec<u8>, dictionary: &[&[u8]]) {
    if dictionary.is_empty() {
        return insert_random(rng, out);
    }
    let token = dictionary[rng.gen_range(0..dictionary.len())];
    let at = rng.gen_range(0..=out.len());
    if rng.gen() && at + token.len() <= out.len() {
        out[at..at + token.len()].copy_from_slice(token);
    } else {
        out.splice(at..at, token.iter().copied());
    }
}
