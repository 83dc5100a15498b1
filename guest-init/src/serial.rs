//! The guest's log: formatted into a small buffer, then written to the 16550's transmit
//! register in one `rep outsb` (the VMM's UART never fills, so no status polling).

use core::fmt::{self, Write};

use ember_wire::layout::SERIAL_PORT;

use crate::arch;

const LINE: usize = 256;

struct LineBuf {
    buf: [u8; LINE],
    len: usize,
}

impl Write for LineBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let n = s.len().min(LINE - 1 - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}

/// Writes one log line (truncated to 255 bytes).
pub fn log_line(args: fmt::Arguments<'_>) {
    let mut line = LineBuf {
        buf: [0; LINE],
        len: 0,
    };
    let _ = line.write_fmt(args);
    line.buf[line.len] = b'\n';
    arch::outsb(SERIAL_PORT, &line.buf[..=line.len]);
}

#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::serial::log_line(format_args!($($arg)*)) };
}
