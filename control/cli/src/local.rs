//! The whole platform in one process: the control service on a data directory (SQLite,
//! local CA, the same files as `ember-control serve`) and one worker on this machine,
//! joined over the same mutual-TLS fleet protocol a remote worker uses. `ember up` runs it
//! for people and `ember bench e2e` for measurements.
//!
//! A worker's lease ends (14 hours by default); the local worker then drains as any worker
//! does, and joins again at once with a new lease.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ember_net::exposition::MetricsListen;
use emberd::config::ServeArgs;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use ember_control::server::fleet_listener::FleetOptions;
use ember_control::server::{self, ServeError, ServeOptions};
use ember_control::service::{Service, Settings};
use ember_core::keys::KeySource;
use ember_store::workers::WorkerState;

/// How long the local worker may take to join.
const JOIN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long execution-role credentials last (`ember-control serve`'s default).
const ROLE_LIFETIME: Duration = Duration::from_secs(3600);

/// Where the platform lives and listens.
#[derive(Clone, Debug)]
pub struct LocalOptions {
    pub data_dir: PathBuf,
    /// The Lambda API (HTTPS).
    pub listen: SocketAddr,
    /// The fleet listener (mutual TLS).
    pub fleet_listen: SocketAddr,
    /// The local worker's API (mutual TLS).
    pub worker_listen: SocketAddr,
    /// Control's and the worker's Prometheus listeners (plain HTTP), if any.
    pub metrics_listen: Option<SocketAddr>,
    pub worker_metrics_listen: Option<SocketAddr>,
}

/// Why the platform could not start.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(transparent)]
    Control(#[from] ServeError),
    #[error("the local worker: {0}")]
    Worker(String),
}

/// A running platform.
pub struct Platform {
    /// `https://ADDR` of the Lambda API.
    pub endpoint: String,
    /// Where control serves `/metrics`, if it does.
    pub metrics_addr: Option<SocketAddr>,
    pub data_dir: PathBuf,
    pub service: Arc<Service>,
    worker_args: ServeArgs,
    stop_worker: watch::Sender<bool>,
    stop_control: watch::Sender<bool>,
    worker: JoinHandle<()>,
    control: JoinHandle<()>,
}

/// Whether the local worker's VMs run sandboxed, each in a process of its own
/// (`docs/isolation.md`): only as root.
pub fn sandboxed() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Starts control and the local worker, and returns once the worker has joined.
pub async fn start(options: LocalOptions) -> Result<Platform, LocalError> {
    let started = server::start(ServeOptions {
        data_dir: options.data_dir.clone(),
        listen: options.listen,
        tls_files: None,
        database_url: None,
        keys: KeySource::DataDir(options.data_dir.clone()),
        settings: Settings {
            role_lifetime: ROLE_LIFETIME,
            ..Settings::default()
        },
        fleet: FleetOptions {
            listen: options.fleet_listen,
            names: Vec::new(),
            vsock: None,
        },
        metrics_listen: options.metrics_listen,
    })
    .await?;
    let endpoint = format!("https://{}", started.addr);
    let fleet_addr = started.fleet_addr;
    let metrics_addr = started.metrics_addr;
    let service = started.service.clone();
    let (stop_control, control_stopped) = watch::channel(false);
    let control = tokio::spawn(started.serve(stopped(control_stopped)));

    let args = ServeArgs {
        control: format!("https://{fleet_addr}"),
        ca: options.data_dir.join("ca.pem"),
        token_file: options.data_dir.join("worker-token"),
        listen: options.worker_listen,
        vsock_port: None,
        advertise: None,
        state_dir: options.data_dir.join("worker"),
        name: Some("local".to_owned()),
        max_envs: 256,
        memory_mib: None,
        metrics_listen: MetricsListen(options.worker_metrics_listen),
        // The sandbox needs root; without it VMs run unsandboxed, and `ember up` says so.
        insecure_no_jail: !sandboxed(),
        jail_uid: 65534,
        jail_gid: 65534,
    };
    let (stop_worker, worker_stopped) = watch::channel(false);
    let worker = tokio::spawn(run_worker(args.clone(), worker_stopped));
    let platform = Platform {
        endpoint,
        metrics_addr,
        data_dir: options.data_dir,
        service,
        worker_args: args,
        stop_worker,
        stop_control,
        worker,
        control,
    };
    platform.joined().await?;
    Ok(platform)
}

impl Platform {
    /// Waits until a worker is active.
    async fn joined(&self) -> Result<(), LocalError> {
        let deadline = Instant::now() + JOIN_TIMEOUT;
        while self.service.fleet.workers.count(WorkerState::Active) == 0 {
            if self.worker.is_finished() {
                return Err(LocalError::Worker("stopped before joining".into()));
            }
            if Instant::now() > deadline {
                return Err(LocalError::Worker(format!(
                    "did not join within {JOIN_TIMEOUT:?}"
                )));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }

    /// Stops the worker as a shutdown would (it finishes what runs and deregisters), starts
    /// it again and returns once a worker is active.
    pub async fn restart_worker(&mut self) -> Result<(), LocalError> {
        let _ = self.stop_worker.send(true);
        let _ = (&mut self.worker).await;
        let (stop_worker, worker_stopped) = watch::channel(false);
        self.stop_worker = stop_worker;
        self.worker = tokio::spawn(run_worker(self.worker_args.clone(), worker_stopped));
        self.joined().await
    }

    /// Stops the worker (it finishes what runs and deregisters), then control.
    pub async fn shutdown(self) {
        let _ = self.stop_worker.send(true);
        let _ = self.worker.await;
        let _ = self.stop_control.send(true);
        let _ = self.control.await;
    }
}

/// Runs the worker, and again with a new lease each time one ends, until stopped.
async fn run_worker(args: ServeArgs, stop: watch::Receiver<bool>) {
    loop {
        if let Err(e) = emberd::serve_until(args.clone(), stopped(stop.clone())).await {
            tracing::error!(error = %e, "the local worker failed");
            // Not in a tight loop: the cause (a port in use, say) may pass.
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        if *stop.borrow() {
            return;
        }
        tracing::info!("the local worker's lease ended; joining again");
    }
}

/// Completes once `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}
