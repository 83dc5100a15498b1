//! The CPU-bound workload of the `sha-heavy` function, as a plain library so the same code
//! runs inside a wasm function and natively on the host (for a baseline to compare with).

use sha2::{Digest, Sha256};

/// Byte `i` of the pattern. It repeats every 256 bytes.
pub fn pattern_byte(i: usize) -> u8 {
    (i.wrapping_mul(31).wrapping_add(7)) as u8
}

/// SHA-256 of `mib` MiB of the pattern (`byte i = (i * 31 + 7) as u8`), as lowercase hex.
pub fn digest_pattern(mib: usize) -> String {
    // The pattern has period 256, so a 64 KiB block fed repeatedly is the whole stream.
    const BLOCK: usize = 64 * 1024;
    let block: Vec<u8> = (0..BLOCK).map(pattern_byte).collect();
    let mut hasher = Sha256::new();
    for _ in 0..mib * (1024 * 1024 / BLOCK) {
        hasher.update(&block);
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 0xf)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_mib_is_the_empty_digest() {
        assert_eq!(
            digest_pattern(0),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn pattern_repeats_every_256_bytes() {
        assert_eq!(pattern_byte(0), 7);
        assert_eq!(pattern_byte(1), 38);
        assert!((0..1024).all(|i| pattern_byte(i) == pattern_byte(i + 256)));
    }
}
