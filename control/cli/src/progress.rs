//! A progress bar for large uploads. The request body is already signed (SigV4 hashes all of
//! it first), so the bar counts bytes as the HTTP client reads the body, not as it is built.

use std::io::{IsTerminal, Read};

use indicatif::{ProgressBar, ProgressStyle};

/// Bodies larger than this (a package of about 768 KiB, base64-encoded in JSON) get a bar.
pub const THRESHOLD: u64 = 1024 * 1024;

/// A bar for an upload of `len` bytes, when it is large enough to be worth one and stderr
/// is a terminal (scripts and logs get no control characters).
pub fn bar(len: u64) -> Option<ProgressBar> {
    if len <= THRESHOLD || !std::io::stderr().is_terminal() {
        return None;
    }
    let style = ProgressStyle::with_template(
        "uploading {bar:30} {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} {eta}",
    )
    .expect("the template is valid");
    Some(ProgressBar::new(len).with_style(style))
}

/// Counts the bytes read through it on a bar, and clears the bar at the end.
pub struct Reader<R> {
    inner: R,
    bar: ProgressBar,
}

impl<R> Reader<R> {
    pub fn new(inner: R, bar: ProgressBar) -> Reader<R> {
        Reader { inner, bar }
    }
}

impl<R: Read> Read for Reader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 {
            self.bar.finish_and_clear();
        } else {
            self.bar.inc(n as u64);
        }
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_bytes_through_and_counts_them() {
        let bar = ProgressBar::hidden();
        bar.set_length(5);
        let mut reader = Reader::new(&b"hello"[..], bar.clone());
        let mut out = Vec::new();
        reader.read_to_end(&mut out).unwrap();
        assert_eq!(out, b"hello");
        assert_eq!(bar.position(), 5);
        assert!(bar.is_finished());
    }

    #[test]
    fn small_bodies_get_no_bar() {
        assert!(bar(THRESHOLD).is_none());
    }
}
