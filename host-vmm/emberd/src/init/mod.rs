//! `emberd` as PID 1 (init mode): what a worker image's initramfs runs as `/init`. In
//! order, one console line per step: mount the file systems ([`mounts`]), attach the
//! console ([`console`]), read the configuration ([`config`]: the kernel command line
//! and the image's file), load the kernel modules ([`kmod`]), check the clock
//! ([`clock`]), report the entropy ([`entropy`]), bring up the network ([`net`]), start
//! reaping orphans ([`reaper`]), then run the worker ([`worker`]) or
//! the self-test, and power off or reboot ([`power`]). A panic or an error on the way
//! prints one `emberd: fatal: ...` line and, after a delay, powers off or reboots: PID 1
//! never exits. `docs/emberd-init.md` is the operator's side.

mod clock;
mod config;
mod console;
mod entropy;
mod kmod;
mod mounts;
mod net;
mod power;
mod reaper;
mod worker;

use std::panic::{self, AssertUnwindSafe};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Mutex;

use config::{Entry, OnExit, Settings};
use power::{Action, Ending};

/// Runs init mode; returns only when not PID 1 (`emberd init` on a running system).
pub fn main() -> ExitCode {
    let pid1 = std::process::id() == 1;
    console::install_logger(log::LevelFilter::Info);
    install_panic_hook();
    if let Err(errno) = reaper::block_sigchld() {
        log::warn!("blocking SIGCHLD: {errno}; orphans will not be reaped");
    }
    // Until the configuration is read, a failure goes down the default way.
    let mut on_exit = OnExit::PowerOff;
    let mut fatal_delay = std::time::Duration::from_secs(10);
    let ending = match panic::catch_unwind(AssertUnwindSafe(|| {
        boot(pid1, &mut on_exit, &mut fatal_delay)
    })) {
        Ok(Ok(ending)) => ending,
        Ok(Err(message)) => Ending::Fatal(message),
        Err(payload) => Ending::Fatal(
            MAIN_PANIC
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take()
                .unwrap_or_else(|| format!("panic: {}", panic_message(&*payload))),
        ),
    };
    let plan = power::plan(&ending, on_exit, fatal_delay, pid1);
    power::finish(&ending, &plan, &mut power::Real);
    match plan.action {
        Action::Exit(status) => ExitCode::from(status),
        // Only reached if reboot(2) returned, which `Real` does not let happen.
        Action::PowerOff | Action::Reboot => ExitCode::FAILURE,
    }
}

/// Everything up to the end; `on_exit` and `fatal_delay` are set as soon as the
/// configuration says.
fn boot(
    pid1: bool,
    on_exit: &mut OnExit,
    fatal_delay: &mut std::time::Duration,
) -> Result<Ending, String> {
    log::info!(
        "init: emberd {} starting as {}",
        env!("CARGO_PKG_VERSION"),
        if pid1 {
            "PID 1"
        } else {
            "an ordinary process (will exit, not power off)"
        }
    );
    mounts::mount_all()?;
    console::attach();
    if pid1 {
        // Ctrl-Alt-Del then sends SIGINT to PID 1 (the worker drains) instead of an
        // immediate reboot.
        if let Err(errno) = nix::sys::reboot::set_cad_enabled(false) {
            log::warn!("init: leaving Ctrl-Alt-Del to the kernel: {errno}");
        }
    }
    let settings = read_settings()?;
    *on_exit = settings.on_exit;
    *fatal_delay = settings.fatal_delay;
    log::set_max_level(settings.log);
    for warning in &settings.warnings {
        log::warn!("config: {warning}");
    }
    load_modules(settings.modules.as_deref())?;
    clock::set();
    entropy::report();
    net::bring_up(settings.net.as_ref())?;
    reaper::start().map_err(|e| format!("starting the reaper thread: {e}"))?;
    log::info!("init: reaping orphaned processes");
    if settings.selftest {
        log::info!("init: running the self-test");
        let result = crate::selftest::run(Path::new("/dev/kvm"));
        console::line(&crate::selftest::line(&result));
        return Ok(if result.is_ok() {
            Ending::Done
        } else {
            Ending::Failed
        });
    }
    worker::run(&settings)?;
    Ok(Ending::Done)
}

/// The command line's and the config file's settings, merged.
fn read_settings() -> Result<Settings, String> {
    let cmdline = std::fs::read_to_string("/proc/cmdline")
        .map_err(|e| format!("reading /proc/cmdline: {e}"))?;
    let from_cmdline = config::parse_cmdline(&cmdline);
    let path = config::file_path(&from_cmdline);
    let from_file: Vec<Entry> = match std::fs::read_to_string(&path) {
        Ok(text) => config::parse_file(&path.display().to_string(), &text)
            .map_err(|e| format!("config: {e}"))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            log::info!("config: no file at {}", path.display());
            Vec::new()
        }
        Err(e) => return Err(format!("config: reading {}: {e}", path.display())),
    };
    let settings = config::merge(&from_file, &from_cmdline).map_err(|e| format!("config: {e}"))?;
    log::info!(
        "config: {} setting(s) from {}, {} from the kernel command line",
        from_file.len(),
        path.display(),
        from_cmdline.len()
    );
    Ok(settings)
}

/// Loads `wanted` (default: every module in `modules.dep`) with their dependencies
/// first. A module that does not load is reported and skipped: whatever needed it
/// reports its own error (the self-test's "/dev/kvm missing").
fn load_modules(wanted: Option<&[String]>) -> Result<(), String> {
    let release = nix::sys::utsname::uname()
        .map_err(|e| format!("uname: {e}"))?
        .release()
        .to_string_lossy()
        .into_owned();
    let dir = Path::new("/lib/modules").join(&release);
    let dep = match std::fs::read_to_string(dir.join("modules.dep")) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && wanted.is_none() => {
            log::info!("modules: none shipped for kernel {release}");
            return Ok(());
        }
        Err(e) => {
            return Err(format!(
                "modules: reading {}/modules.dep: {e}",
                dir.display()
            ))
        }
    };
    let modules = kmod::parse_modules_dep(&dep).map_err(|e| format!("modules: {e}"))?;
    let builtin = std::fs::read_to_string(dir.join("modules.builtin"))
        .map(|text| kmod::parse_builtin(&text))
        .unwrap_or_default();
    let wanted: Vec<String> = match wanted {
        Some(names) => names
            .iter()
            .filter(|name| {
                let built_in = builtin.contains(&kmod::module_name(name));
                if built_in {
                    log::info!("modules: {name} is built in");
                }
                !built_in
            })
            .cloned()
            .collect(),
        None => modules.keys().cloned().collect(),
    };
    let order = kmod::load_order(&modules, &wanted).map_err(|e| format!("modules: {e}"))?;
    for module in order {
        match kmod::load(&dir.join(&module.path)) {
            Ok(kmod::Loaded::Now) => log::info!("modules: loaded {}", module.name),
            // kvm_intel and kvm_amd also answer EEXIST when the other one is loaded.
            Ok(kmod::Loaded::Already) => log::info!(
                "modules: {}: EEXIST, loaded already (or, for a KVM vendor module, the other vendor's is)",
                module.name
            ),
            Ok(kmod::Loaded::NoDevice) => {
                log::info!("modules: {} has no device here; skipped", module.name)
            }
            Err(e) => log::warn!("modules: {}: {e}", module.name),
        }
    }
    Ok(())
}

/// The init thread's panic, described by the hook (which knows where it happened) for
/// `main`'s one fatal line.
static MAIN_PANIC: Mutex<Option<String>> = Mutex::new(None);

/// Describes every panic in one line. On the init thread the panic unwinds into `main`,
/// which prints it as the fatal line; on other threads (a worker runtime's, which tokio
/// contains) the hook prints it, naming the thread.
fn install_panic_hook() {
    panic::set_hook(Box::new(|info| {
        let location = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let message = panic_message(info.payload());
        let thread = std::thread::current();
        match thread.name().unwrap_or("unnamed") {
            "main" => {
                *MAIN_PANIC.lock().unwrap_or_else(|e| e.into_inner()) =
                    Some(format!("panic{location}: {message}"));
            }
            name => console::line(&format!(
                "emberd: panic in thread {name}{location}: {message}"
            )),
        }
    }));
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> &str {
    payload
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| payload.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}
