//! Randomness for keys, nonces and file names, all from the operating system's generator
//! (`getrandom`), so no user-space generator's state can be cloned or leaked.

use std::io;

use zeroize::Zeroizing;

/// `N` random bytes.
pub fn bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| io::Error::other(format!("random generator: {e}")))?;
    Ok(out)
}

/// A fresh 256-bit key, wiped from memory when dropped.
pub fn key() -> io::Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut())
        .map_err(|e| io::Error::other(format!("random generator: {e}")))?;
    Ok(key)
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `prefix` and 16 uniformly drawn uppercase letters or digits, the shape of AWS key ids.
pub fn access_key_id(prefix: &str) -> std::io::Result<String> {
    const ALPHABET: &[u8; 36] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
    Ok(format!("{prefix}{}", draw(ALPHABET, 16)?))
}

/// 40 characters of the base64 alphabet, the shape of AWS secret keys (240 bits).
pub fn secret_access_key() -> std::io::Result<String> {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    draw(ALPHABET, 40)
}

/// 12 decimal digits, uniformly drawn (leading zeros allowed, as in AWS account ids).
pub fn account_id() -> std::io::Result<String> {
    draw(b"0123456789", 12)
}

/// `len` characters of `alphabet`, each uniform: random bytes at or above the largest
/// multiple of the alphabet's size are dropped rather than folded in, which would bias
/// the first characters.
fn draw(alphabet: &[u8], len: usize) -> std::io::Result<String> {
    let limit = 256 - 256 % alphabet.len();
    let mut out = String::with_capacity(len);
    while out.len() < len {
        for byte in bytes::<32>()? {
            if usize::from(byte) < limit && out.len() < len {
                out.push(char::from(alphabet[usize::from(byte) % alphabet.len()]));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_distinct_values() {
        assert_ne!(bytes::<16>().unwrap(), bytes::<16>().unwrap());
        assert_ne!(*key().unwrap(), *key().unwrap());
        assert_eq!(hex(&[0, 0xab, 0x7f]), "00ab7f");
    }

    #[test]
    fn draws_every_character_of_the_alphabet() {
        let drawn: String = (0..50).map(|_| draw(b"abc", 20).unwrap()).collect();
        for c in ['a', 'b', 'c'] {
            assert!(drawn.contains(c));
        }
        assert!(drawn.chars().all(|c| "abc".contains(c)));
    }
}
