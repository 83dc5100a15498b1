//! The worker in init mode: `emberd serve` with flags from the configuration, the token
//! written to a private file on `/run` (a tmpfs: never on a disk), SIGTERM or SIGINT
//! (Ctrl-Alt-Del) to drain. Registration already retries an unreachable control with
//! backoff (`register.rs`); a refusal (a wrong or expired token) ends `serve`, and here,
//! with no operator to restart it, is retried with backoff too: the token may be
//! replaced on control meanwhile. The first SIGTERM or SIGINT drains; a second one, for
//! a worker still registering (which does not watch for the drain), stops it at once.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use clap::Parser;
use emberd::config::ServeArgs;
use emberd::WorkerError;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;

use super::config::{serve_argv, Settings};

/// Where the token goes: `/run` is a tmpfs init mounted.
const TOKEN_FILE: &str = "/run/ember/token";

/// Serve flags with a default in the image (docs/worker-image.md): the CA that
/// `ember-image` copies in, and the state on the tmpfs.
const DEFAULTS: [(&str, &str); 2] = [
    ("ca", "/etc/ember/ca.pem"),
    ("state_dir", "/run/ember/state"),
];

/// Defaults for a worker that reaches control over vsock (a VM without an IP network):
/// its API is served on this vsock port, and no metrics listener is opened, as nothing
/// outside the VM could reach one on loopback.
const VSOCK_DEFAULTS: [(&str, &str); 2] = [("vsock_port", "9445"), ("metrics_listen", "off")];

/// The first and the longest pause between refused registrations.
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// `emberd serve`'s arguments, parsed as its command line would be.
#[derive(Parser)]
#[command(name = "emberd serve")]
struct Serve {
    #[command(flatten)]
    args: ServeArgs,
}

/// `emberd serve`'s arguments from the `serve` settings, checked by clap; an error is
/// clap's message on one line (`unexpected argument '--contorl' found`).
fn serve_args(serve: &BTreeMap<String, String>, token_file: &Path) -> Result<ServeArgs, String> {
    let mut serve = serve.clone();
    for (key, default) in DEFAULTS {
        serve
            .entry(key.to_owned())
            .or_insert_with(|| default.to_owned());
    }
    if serve
        .get("control")
        .is_some_and(|url| url.starts_with("vsock://"))
    {
        for (key, default) in VSOCK_DEFAULTS {
            serve
                .entry(key.to_owned())
                .or_insert_with(|| default.to_owned());
        }
    }
    Serve::try_parse_from(serve_argv(&serve, token_file))
        .map(|serve| serve.args)
        .map_err(|e| {
            // clap's message without the usage and tips that follow its first blank line.
            let text = e.to_string();
            let message: Vec<&str> = text
                .lines()
                .take_while(|line| !line.trim().is_empty())
                .map(str::trim)
                .collect();
            format!(
                "configuration: {}",
                message.join(" ").trim_start_matches("error: ")
            )
        })
}

/// Runs the worker until it has drained.
pub fn run(settings: &Settings) -> Result<(), String> {
    let token = settings
        .token
        .as_deref()
        .ok_or("no bootstrap token: put `token=...` in the config file")?;
    let token_file = Path::new(TOKEN_FILE);
    write_token(token_file, token)
        .map_err(|e| format!("writing the token to {TOKEN_FILE}: {e}"))?;
    let args = serve_args(&settings.serve, token_file)?;
    log::info!(
        "worker: joining {} as {}",
        args.control,
        args.name.as_deref().unwrap_or("the host name")
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("starting the runtime: {e}"))?;
    runtime.block_on(serve(args))
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let signals = count_signals().map_err(|e| format!("taking SIGTERM and SIGINT: {e}"))?;
    let mut backoff = FIRST_BACKOFF;
    loop {
        let mut first = signals.clone();
        let drain = async move {
            let _ = first.wait_for(|n| *n >= 1).await;
        };
        let mut second = signals.clone();
        // `serve` drains on the first signal once registered; while registering it does
        // not look, so a second signal ends it at once.
        let result = tokio::select! {
            result = emberd::serve_until(args.clone(), drain) => result,
            _ = second.wait_for(|n| *n >= 2) => {
                log::warn!("worker: a second signal: stopping without draining");
                return Ok(());
            }
        };
        match result {
            Ok(()) => {
                log::info!("worker: drained");
                return Ok(());
            }
            Err(WorkerError::Register(e)) => {
                log::error!("worker: {e}; trying again in {backoff:?}");
                let mut stopped = signals.clone();
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    _ = stopped.wait_for(|n| *n >= 1) => return Ok(()),
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// How many SIGTERMs and SIGINTs (Ctrl-Alt-Del) have come.
fn count_signals() -> std::io::Result<watch::Receiver<u32>> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let (count, counted) = watch::channel(0);
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = term.recv() => log::info!("worker: SIGTERM, draining"),
                _ = int.recv() => log::info!("worker: SIGINT (Ctrl-Alt-Del), draining"),
            }
            count.send_modify(|n| *n += 1);
        }
    });
    Ok(counted)
}

fn write_token(path: &Path, token: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(token.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn serve_keys_become_the_flags_that_clap_checks() {
        let serve = BTreeMap::from([
            ("control".to_owned(), "https://c:9444".to_owned()),
            ("ca".to_owned(), "/image/ca.pem".to_owned()),
            ("state_dir".to_owned(), "/var/ember".to_owned()),
            ("max_envs".to_owned(), "8".to_owned()),
        ]);
        let args = serve_args(&serve, Path::new("/run/ember/token")).unwrap();
        assert_eq!(args.control, "https://c:9444");
        assert_eq!(args.max_envs, 8);
        assert_eq!(args.token_file, PathBuf::from("/run/ember/token"));
        assert_eq!(args.ca, PathBuf::from("/image/ca.pem"));
        assert_eq!(args.state_dir, PathBuf::from("/var/ember"));

        let mut typo = serve.clone();
        typo.insert("contorl".to_owned(), "x".to_owned());
        let err = serve_args(&typo, Path::new("/t")).err().unwrap();
        assert!(
            err.starts_with("configuration: ") && err.contains("--contorl"),
            "{err}"
        );
        assert!(!err.contains('\n'));
        let defaults = BTreeMap::from([("control".to_owned(), "https://c:9444".to_owned())]);
        let args = serve_args(&defaults, Path::new("/t")).unwrap();
        assert_eq!(args.ca, PathBuf::from("/etc/ember/ca.pem"));
        assert_eq!(args.state_dir, PathBuf::from("/run/ember/state"));
        assert_eq!(args.vsock_port, None, "no vsock for a worker on TCP");
        let in_vm = BTreeMap::from([("control".to_owned(), "vsock://2:9444".to_owned())]);
        let in_vm = serve_args(&in_vm, Path::new("/t")).unwrap();
        assert_eq!(in_vm.vsock_port, Some(9445));
        assert_eq!(in_vm.metrics_listen.0, None);
        assert!(args.metrics_listen.0.is_some(), "metrics on TCP as usual");

        let mut missing = serve;
        missing.remove("control");
        let err = serve_args(&missing, Path::new("/t")).err().unwrap();
        assert!(err.contains("--control"), "{err}");
    }
}
