//! The 16550 UART (vm-superio) whose output becomes the guest's log on the host:
//! split into lines, each line bounded, the last few kept per VM and forwarded to `log`
//! within a budget of lines a second ([`LogBudget`]).

use std::collections::VecDeque;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use vm_superio::serial::NoEvents;
use vm_superio::{Serial, Trigger};

use crate::log_budget::{Admit, LogBudget};

/// Longest line kept; longer output is split.
const MAX_LINE: usize = 1024;
/// Lines kept per VM.
const MAX_LINES: usize = 256;
/// Lines a second one VM's serial port may put in the host's log.
const LOGGED_PER_SECOND: u32 = 50;

/// The guest's log as seen on the host.
pub struct GuestLog {
    vm_id: String,
    lines: Mutex<VecDeque<String>>,
    budget: Mutex<LogBudget>,
}

impl GuestLog {
    pub fn new(vm_id: String) -> Arc<GuestLog> {
        Arc::new(GuestLog {
            vm_id,
            lines: Mutex::new(VecDeque::new()),
            budget: Mutex::new(LogBudget::new(LOGGED_PER_SECOND)),
        })
    }

    /// The most recent lines, oldest first.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap().iter().cloned().collect()
    }

    fn push(&self, line: String) {
        let admitted = self.budget.lock().unwrap().admit(Instant::now());
        if let Admit::Log { dropped } = admitted {
            if dropped > 0 {
                log::warn!(target: "guest", "[vm {}] {dropped} lines not logged (over {LOGGED_PER_SECOND}/s)", self.vm_id);
            }
            log::info!(target: "guest", "[vm {}] {line}", self.vm_id);
        }
        let mut lines = self.lines.lock().unwrap();
        if lines.len() == MAX_LINES {
            lines.pop_front();
        }
        lines.push_back(line);
    }
}

/// Collects bytes from the UART into lines.
pub struct LineWriter {
    partial: Vec<u8>,
    log: Arc<GuestLog>,
}

impl LineWriter {
    fn flush_line(&mut self) {
        let text = String::from_utf8_lossy(&self.partial);
        self.log.push(text.trim_end_matches('\r').to_string());
        self.partial.clear();
    }
}

impl io::Write for LineWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        for &b in buf {
            if b == b'\n' {
                self.flush_line();
            } else {
                self.partial.push(b);
                if self.partial.len() == MAX_LINE {
                    self.flush_line();
                }
            }
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.flush_line();
        }
    }
}

/// The VM has no interrupt controller: the UART's interrupt line goes nowhere.
pub struct NoInterrupt;

impl Trigger for NoInterrupt {
    type E = io::Error;
    fn trigger(&self) -> io::Result<()> {
        Ok(())
    }
}

pub type SerialDevice = Serial<NoInterrupt, NoEvents, LineWriter>;

pub fn new(log: Arc<GuestLog>) -> SerialDevice {
    Serial::new(
        NoInterrupt,
        LineWriter {
            partial: Vec::new(),
            log,
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn output_is_split_into_bounded_lines() {
        let log = GuestLog::new("t".into());
        let mut w = LineWriter {
            partial: Vec::new(),
            log: log.clone(),
        };
        w.write_all(b"hello\r\nwor").unwrap();
        w.write_all(b"ld\n").unwrap();
        w.write_all(&vec![b'x'; MAX_LINE + 5]).unwrap();
        drop(w);
        let lines = log.lines();
        assert_eq!(lines[0], "hello");
        assert_eq!(lines[1], "world");
        assert_eq!(lines[2].len(), MAX_LINE);
        assert_eq!(lines[3], "xxxxx");
        for i in 0..MAX_LINES + 10 {
            log.push(i.to_string());
        }
        assert_eq!(log.lines().len(), MAX_LINES);
        assert_eq!(log.lines().last().unwrap(), &(MAX_LINES + 9).to_string());
    }
}
