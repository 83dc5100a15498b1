//! The console in init mode: the serial port `ttyS0` (what QEMU and a BMC's serial-over-LAN
//! show) becomes stdout and stderr, and every log line also goes to the screen, `tty0`.
//! Until `/dev` is mounted there is only what the kernel gave PID 1 (`/dev/console`, if
//! the initramfs has it), so lines go to stderr alone.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

/// The screen, once opened.
static SCREEN: Mutex<Option<File>> = Mutex::new(None);

/// Writes one line to stderr and the screen. A console that cannot be written is not
/// worth failing for: there is nowhere else to report it.
pub fn line(text: &str) {
    let text = format!("{text}\n");
    let _ = std::io::stderr().lock().write_all(text.as_bytes());
    if let Some(screen) = SCREEN.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
        let _ = screen.write_all(text.as_bytes());
    }
}

/// Makes `ttyS0` stdin, stdout and stderr (if it opens) and `tty0` the screen (if it
/// opens); says which it could not open.
pub fn attach() {
    match open("/dev/ttyS0") {
        Ok(serial) => {
            for fd in 0..=2 {
                // SAFETY: fds 0-2 are the standard streams; dup2 over them is how a
                // process changes its console, and `serial` stays open until it returns.
                let _ = unsafe { libc::dup2(serial.as_raw_fd(), fd) };
            }
            log::info!("console: /dev/ttyS0 is stdin, stdout and stderr");
        }
        Err(e) => line(&format!(
            "emberd: console: no /dev/ttyS0 ({e}); keeping the kernel's console"
        )),
    }
    match open("/dev/tty0") {
        Ok(screen) => {
            log::info!("console: log lines also on the screen, /dev/tty0");
            *SCREEN.lock().unwrap_or_else(|e| e.into_inner()) = Some(screen);
        }
        Err(e) => line(&format!("emberd: console: no screen /dev/tty0 ({e})")),
    }
}

fn open(path: &str) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY)
        .open(path)
}

/// The `log` backend in init mode: `emberd: ` lines on the console, warnings and errors
/// marked.
pub struct Logger;

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let mark = match record.level() {
            log::Level::Error => "error: ",
            log::Level::Warn => "warning: ",
            log::Level::Info => "",
            log::Level::Debug | log::Level::Trace => "debug: ",
        };
        line(&format!("emberd: {mark}{}", record.args()));
    }

    fn flush(&self) {}
}

/// Installs [`Logger`] at `level`.
pub fn install_logger(level: log::LevelFilter) {
    static LOGGER: Logger = Logger;
    let _ = log::set_logger(&LOGGER);
    log::set_max_level(level);
}
