//! Logs of the commands that run the platform in process (`ember up`, `ember bench`): to
//! stderr, at `default` unless `RUST_LOG` says otherwise; the worker's `log` records too.

pub fn init(default: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    // Ignored if a subscriber is set already (tests call commands more than once).
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(filter)
        .try_init();
}
