//! Randomness for keys, nonces and file names, all from the operating system's generator
//! (`getrandom`), so no user-space generator's state can be cloned or leaked.

use std::io;

use zeroize::Zeroizing;

/// `N` random bytes.
pub(crate) fn bytes<const N: usize>() -> io::Result<[u8; N]> {
    let mut out = [0u8; N];
    getrandom::fill(&mut out).map_err(|e| io::Error::other(format!("random generator: {e}")))?;
    Ok(out)
}

/// A fresh 256-bit key, wiped from memory when dropped.
pub(crate) fn key() -> io::Result<Zeroizing<[u8; 32]>> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut())
        .map_err(|e| io::Error::other(format!("random generator: {e}")))?;
    Ok(key)
}

/// Lowercase hex of `bytes`.
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
}
