//! `ember-control`: the control service (`serve`) and the operator commands that work on
//! its data directory (`keys`, `account`, `worker`).

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use ember_control::admin::account::AccountCommand;
use ember_control::admin::keys::KeysCommand;
use ember_control::admin::worker::WorkerCommand;
use ember_control::admin::{DataDirArgs, DatabaseArgs, MasterKeyArgs};
use ember_control::events::EventSettings;
use ember_control::fleet::{join, FleetSettings};
use ember_control::logs::LogSettings;
use ember_control::metrics::{self, http::MetricsListen};
use ember_control::server::fleet_listener::{FleetOptions, HybridVsock};
use ember_control::server::{self, ServeOptions};
use ember_control::service::{RequestLimits, Settings};
use ember_fleet::messages::Capacity;
use ember_net::limits::Limits;

#[derive(Parser)]
#[command(name = "ember-control", version, about = "ember's control service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the Lambda-compatible API over HTTPS.
    Serve(Box<ServeArgs>),
    /// Manage the master keys that wrap stored code.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage accounts.
    #[command(subcommand)]
    Account(AccountCommand),
    /// Manage the workers' join tokens; list and revoke workers.
    #[command(subcommand)]
    Worker(WorkerCommand),
}

#[derive(Args)]
struct ServeArgs {
    #[command(flatten)]
    dir: DataDirArgs,
    /// Address to listen on; port 0 picks a free one (printed once listening).
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    /// The server certificate chain (PEM); without it a local CA in DIR/tls issues one.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The server certificate's private key (PEM).
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    #[command(flatten)]
    database: DatabaseArgs,
    #[command(flatten)]
    keys: MasterKeyArgs,
    /// The region clients sign for and ARNs name.
    #[arg(long, default_value = "local")]
    region: String,
    /// How long execution-role credentials last, in seconds (as STS: 15 min to 12 h).
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(900..=43_200))]
    role_credentials_ttl: u64,
    /// Where workers register, heartbeat and fetch code (mutual TLS); port 0 picks a free
    /// one (printed once listening).
    #[arg(long, default_value = "127.0.0.1:9444")]
    fleet_listen: SocketAddr,
    /// Another host name or address workers reach the fleet listener by (its certificate
    /// covers localhost, the loopback addresses and the listen address already).
    #[arg(long = "fleet-name", value_name = "HOST")]
    fleet_names: Vec<String>,
    /// Also take workers in a VM over vsock: the VM's hybrid vsock socket
    /// (`vhost-device-vsock --uds-path`); guests dial `vsock://2:PORT` (`--fleet-vsock-port`)
    /// and control listens on `PATH_PORT`.
    #[arg(long, value_name = "PATH", requires = "fleet_vsock_port")]
    fleet_vsock_uds: Option<PathBuf>,
    /// The vsock port guests dial control's fleet listener on (with `--fleet-vsock-uds`).
    #[arg(long, value_name = "PORT", requires = "fleet_vsock_uds")]
    fleet_vsock_port: Option<u32>,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP without
    /// authentication: keep it on loopback or a scrape-only network); port 0 picks a free
    /// one (printed once listening); `off` serves none.
    #[arg(long, value_name = "ADDR|off", default_value = metrics::http::DEFAULT_LISTEN)]
    metrics_listen: MetricsListen,
    /// How often workers heartbeat, in milliseconds; a worker silent for 3 is dead.
    #[arg(long, value_name = "MS", default_value_t = 1000,
          value_parser = clap::value_parser!(u64).range(50..=60_000))]
    heartbeat_ms: u64,
    /// The most vCPUs a worker joining with the bootstrap token (DIR/worker-token) may
    /// claim; tokens from `worker token create` carry their own ceiling.
    #[arg(long, value_name = "N", default_value_t = join::DEFAULT_CEILING.vcpus)]
    worker_max_vcpus: u32,
    /// The most guest memory (MiB) a worker joining with the bootstrap token may claim.
    #[arg(long, value_name = "MIB", default_value_t = join::DEFAULT_CEILING.memory_mib)]
    worker_max_memory_mib: u64,
    /// The most environments a worker joining with the bootstrap token may claim.
    #[arg(long, value_name = "N", default_value_t = join::DEFAULT_CEILING.max_environments)]
    worker_max_envs: u32,
    /// How long a worker's lease lasts, in seconds (at most 14 hours).
    #[arg(long, value_name = "SECONDS", default_value_t = 50_400,
          value_parser = clap::value_parser!(u64).range(1..=50_400))]
    lease_seconds: u64,
    /// Wait before an asynchronous invocation's first retry, in milliseconds; the second
    /// waits twice as long.
    #[arg(long, value_name = "MS", default_value_t = 60_000,
          value_parser = clap::value_parser!(u64).range(1..=3_600_000))]
    event_retry_delay_ms: u64,
    /// How long an asynchronous invocation may wait to run before it is discarded, in
    /// seconds (Lambda's MaximumEventAgeInSeconds; at most 6 hours).
    #[arg(long, value_name = "SECONDS", default_value_t = 21_600,
          value_parser = clap::value_parser!(u64).range(1..=21_600))]
    max_event_age_seconds: u64,
    /// Asynchronous invocations this instance runs at once.
    #[arg(long, value_name = "N", default_value_t = 32,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    event_parallelism: u64,
    /// How long function logs are kept, in days.
    #[arg(long, value_name = "DAYS", default_value_t = 7,
          value_parser = clap::value_parser!(u64).range(1..=3653))]
    log_retention_days: u64,
    /// Log events kept per function at most; the oldest go first.
    #[arg(long, value_name = "N", default_value_t = 100_000,
          value_parser = clap::value_parser!(u64).range(1..=100_000_000))]
    log_max_events: u64,
    #[command(flatten)]
    limits: LimitArgs,
}

/// What one client may hold of the API and fleet listeners (each listener has its own
/// connection cap).
#[derive(Args)]
struct LimitArgs {
    /// Connections each listener serves at once; more wait to be accepted.
    #[arg(long, value_name = "N", default_value_t = 1024,
          value_parser = clap::value_parser!(u64).range(1..=1_000_000))]
    max_connections: u64,
    /// How long a client may take over the TLS handshake.
    #[arg(long, value_name = "MS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    handshake_timeout_ms: u64,
    /// How long a client may take to send a request's headers, and may stay idle between
    /// requests.
    #[arg(long, value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    header_timeout_ms: u64,
    /// How long a request body may go without a byte arriving.
    #[arg(long, value_name = "MS", default_value_t = 30_000,
          value_parser = clap::value_parser!(u64).range(100..=600_000))]
    body_timeout_ms: u64,
    /// How long a whole request body may take to arrive.
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    body_deadline_seconds: u64,
    /// MiB of request bodies the API reads at once; past it, requests wait up to 10 s,
    /// then are refused with TooManyRequestsException.
    #[arg(long, value_name = "MIB", default_value_t = 512,
          value_parser = clap::value_parser!(u64).range(75..=65_536))]
    body_memory_mib: u64,
}

impl LimitArgs {
    fn limits(&self) -> RequestLimits {
        let size = |n: u64| usize::try_from(n).unwrap_or(usize::MAX);
        RequestLimits {
            listener: Limits {
                max_connections: size(self.max_connections),
                handshake_timeout: Duration::from_millis(self.handshake_timeout_ms),
                header_timeout: Duration::from_millis(self.header_timeout_ms),
                body_timeout: Duration::from_millis(self.body_timeout_ms),
                body_deadline: Duration::from_secs(self.body_deadline_seconds),
            },
            body_memory: size(self.body_memory_mib << 20),
            ..RequestLimits::default()
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let result = match cli.command {
        Command::Serve(args) => serve(*args),
        Command::Keys(command) => command
            .run(&mut std::io::stdout().lock())
            .map_err(|e| e.to_string()),
        Command::Worker(command) => runtime().and_then(|rt| {
            rt.block_on(command.run(&mut std::io::stdout()))
                .map_err(|e| e.to_string())
        }),
        Command::Account(command) => runtime().and_then(|rt| {
            rt.block_on(command.run(&mut std::io::stdout()))
                .map_err(|e| e.to_string())
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ember-control: {e}");
            ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> Result<(), String> {
    let data_dir = args.dir.data_dir;
    let options = ServeOptions {
        keys: args.keys.source(&data_dir),
        listen: args.listen,
        tls_files: args.tls_cert.zip(args.tls_key),
        database_url: args.database.database_url,
        settings: Settings {
            region: args.region,
            fleet: FleetSettings {
                heartbeat: Duration::from_millis(args.heartbeat_ms),
                lease: Duration::from_secs(args.lease_seconds),
                bootstrap_ceiling: Capacity {
                    vcpus: args.worker_max_vcpus,
                    memory_mib: args.worker_max_memory_mib,
                    max_environments: args.worker_max_envs,
                },
                ..FleetSettings::default()
            },
            events: EventSettings {
                retry_delay: Duration::from_millis(args.event_retry_delay_ms),
                max_age: Duration::from_secs(args.max_event_age_seconds),
                parallelism: usize::try_from(args.event_parallelism).unwrap_or(usize::MAX),
            },
            logs: LogSettings {
                retention: Duration::from_secs(args.log_retention_days * 24 * 3600),
                max_events_per_function: args.log_max_events,
                ..LogSettings::default()
            },
            role_lifetime: Duration::from_secs(args.role_credentials_ttl),
            requests: args.limits.limits(),
            ..Settings::default()
        },
        fleet: FleetOptions {
            listen: args.fleet_listen,
            names: args.fleet_names,
            vsock: args
                .fleet_vsock_uds
                .zip(args.fleet_vsock_port)
                .map(|(uds, port)| HybridVsock { uds, port }),
        },
        metrics_listen: args.metrics_listen.0,
        data_dir,
    };
    runtime()?
        // The signal handlers go in inside the runtime, before the service starts.
        .block_on(async { server::run(options, server::shutdown_signal()).await })
        .map_err(|e| e.to_string())
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Runtime::new().map_err(|e| format!("starting the async runtime: {e}"))
}
