//! The worker daemon, `emberd serve`: joins control's fleet ([`register`]), serves the
//! worker API over mutual TLS ([`api`]), runs invocations on the environment pool
//! ([`invoke`]) with code from an encrypted cache ([`artifacts`]), heartbeats
//! ([`heartbeat`]) and leaves gracefully when its lease ends ([`lease`]). Its files live
//! in the state directory ([`state_dir`]). `docs/fleet.md` describes the protocol.
//!
//! Once it serves, it prints `emberd worker ID serving on https://ADDRESS` (or
//! `vsock://CID:PORT`, as advertised) on stdout, then
//! `emberd metrics on http://ADDRESS` when it serves metrics ([`metrics`]).

mod api;
mod artifacts;
pub mod config;
mod control;
mod error;
mod heartbeat;
mod invoke;
pub mod jail;
mod lease;
mod metrics;
mod provisioning;
mod register;
mod state_dir;

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ember_fleet::messages::{Capacity, HeartbeatRequest, ProvisionFailure};
use ember_fleet::tls::Identity;
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify};
use tokio_rustls::TlsAcceptor;

use config::ServeArgs;
use control::ControlClient;
use ember_vmm::function::{FunctionSpec, Pool, PoolConfig};
use ember_vmm::log_budget::{Admit, LogBudget};
pub use error::WorkerError;
use invoke::Functions;

/// Lines a second of functions' output the worker's log takes.
const FUNCTION_LINES_PER_SECOND: u32 = 200;

/// What the worker API and the heartbeats share.
pub struct Worker {
    functions: Functions,
    in_flight: AtomicU32,
    /// Set once the worker takes no more invocations.
    draining: AtomicBool,
    /// Woken when the last invocation in progress ends.
    idle: Notify,
}

impl Worker {
    /// Counts an invocation in, unless the worker is draining.
    fn begin(&self) -> Option<Running<'_>> {
        // Counted before the check: a drain that starts meanwhile waits for it.
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let running = Running(self);
        (!self.draining.load(Ordering::SeqCst)).then_some(running)
    }

    fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// The heartbeat's report, with the provisioning failures that still stand.
    fn report(&self, provision_failures: Vec<ProvisionFailure>) -> HeartbeatRequest {
        HeartbeatRequest {
            inventory: self.functions.inventory(),
            in_flight: self.in_flight(),
            environments: self.functions.environments() as u32,
            draining: self.draining.load(Ordering::SeqCst),
            provision_failures,
        }
    }
}

/// One invocation in progress; counted out when dropped.
struct Running<'a>(&'a Worker);

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.0.idle.notify_waiters();
        }
    }
}

/// Runs the worker until it has drained (lease end or SIGTERM/SIGINT).
pub fn run(args: ServeArgs) -> Result<(), WorkerError> {
    let (drain, drained) = watch::channel(None);
    // Before the runtime starts threads, so all of them leave the signals to one thread.
    lease::on_termination_signal(drain.clone()).map_err(WorkerError::Signals)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(WorkerError::Runtime)?;
    let served = runtime.block_on(serve(args, Announce::Stdout, drain, drained));
    // A drain that hit its limit may leave an invocation's blocking thread behind; the
    // process exits anyway instead of waiting for it as dropping the runtime would.
    runtime.shutdown_timeout(SHUTDOWN_LIMIT);
    served
}

/// How long the process waits, once drained, for blocking threads still running.
const SHUTDOWN_LIMIT: Duration = Duration::from_secs(5);

/// Runs the worker on the caller's runtime until it has drained: at the end of its lease,
/// or once `stop` completes. For embedding (`ember up`): signals and stdout are the
/// caller's.
pub async fn serve_until(
    args: ServeArgs,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), WorkerError> {
    let (drain, drained) = watch::channel(None);
    let on_stop = drain.clone();
    let stopper = tokio::spawn(async move {
        stop.await;
        lease::start(&on_stop, lease::DrainReason::Signal);
    });
    let result = serve(args, Announce::Log, drain, drained).await;
    stopper.abort();
    result
}

/// Where the worker says that it serves: stdout for `emberd serve` (scripts and tests
/// read it), only the log when embedded.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Announce {
    Stdout,
    Log,
}

async fn serve(
    args: ServeArgs,
    announce: Announce,
    drain: watch::Sender<Option<lease::DrainReason>>,
    mut drained: watch::Receiver<Option<lease::DrainReason>>,
) -> Result<(), WorkerError> {
    state_dir::private_dir(&args.state_dir).map_err(|source| WorkerError::StateDir {
        path: args.state_dir.clone(),
        source,
    })?;
    let ca_pem = read(&args.ca)?;
    let token = read_secret(&args.token_file)?;
    // Before joining: a host that cannot sandbox VMs says so now, not at the first cold start.
    let jail = jail::start(&args)?;
    let listener = ember_net::listen::bind(args.listen).await?;
    let local = listener.local_addr().map_err(WorkerError::LocalAddr)?;
    let vsock_listener = args.vsock_port.map(ember_net::vsock::bind).transpose()?;
    let address = match (&args.advertise, args.vsock_port) {
        (Some(address), _) => address.clone(),
        (None, Some(port)) => {
            let cid = ember_net::vsock::local_cid().map_err(WorkerError::LocalCid)?;
            format!("vsock://{cid}:{port}")
        }
        (None, None) if local.ip().is_unspecified() => return Err(WorkerError::NoAdvertise(local)),
        (None, None) => local.to_string(),
    };
    let metrics_listener = match args.metrics_listen.0 {
        Some(addr) => Some(
            ember_net::listen::bind(addr)
                .await
                .map_err(WorkerError::MetricsListen)?,
        ),
        None => None,
    };
    let metrics_addr = metrics_listener
        .as_ref()
        .map(TcpListener::local_addr)
        .transpose()
        .map_err(WorkerError::LocalAddr)?;

    let anonymous = ControlClient::new(&args.control, &ca_pem, None)?;
    let name = args.name.clone().unwrap_or_else(host_name);
    // What control is told is what the pool holds to: it refuses work beyond it.
    let capacity = capacity(&args);
    let registration = register::register(
        &anonymous,
        &args.state_dir,
        token.trim(),
        &name,
        &address,
        capacity.clone(),
    )
    .await?;
    let response = &registration.response;
    let identity = Identity {
        certificate_pem: &response.certificate_pem,
        key_pem: &registration.key_pem,
    };
    let control = Arc::new(ControlClient::new(&args.control, &ca_pem, Some(&identity))?);
    // Who may call the worker API: control's client certificate, from the fleet CA that
    // control handed over at registration (on a connection `--ca` authenticated).
    let server_config = ember_fleet::tls::server_config(&response.ca_pem, &identity, false)
        .map_err(WorkerError::ApiTls)?;

    // Functions' output is theirs (it reaches callers as log tails); the worker's own log
    // takes a bounded share of it, whatever a function prints.
    let budget = Mutex::new(LogBudget::new(FUNCTION_LINES_PER_SECOND));
    let log_sink = Arc::new(move |spec: &FunctionSpec, chunk: &[u8]| {
        for line in String::from_utf8_lossy(chunk).lines() {
            let admitted = budget.lock().unwrap().admit(Instant::now());
            let Admit::Log { dropped } = admitted else {
                continue;
            };
            if dropped > 0 {
                log::warn!(target: "function", "{dropped} function output lines not logged (over {FUNCTION_LINES_PER_SECOND}/s)");
            }
            log::info!(target: "function", "[{}:{}] {line}", spec.name, spec.version);
        }
    });
    let worker = Arc::new(Worker {
        functions: Functions::new(
            Pool::new(
                PoolConfig {
                    max_environments: capacity.max_environments as usize,
                    memory_mib: capacity.memory_mib,
                    jail,
                    ..PoolConfig::default()
                },
                log_sink,
            ),
            artifacts::ArtifactCache::open(&args.state_dir, control.clone())
                .map_err(WorkerError::ArtifactCache)?,
        ),
        in_flight: AtomicU32::new(0),
        draining: AtomicBool::new(false),
        idle: Notify::new(),
    });

    let (stop, stopped) = watch::channel(());
    let until_stopped = |mut stopped: watch::Receiver<()>| async move {
        let _ = stopped.changed().await;
    };
    let metrics_server = metrics_listener.map(|listener| {
        let registry = metrics::registry(worker.clone());
        tokio::spawn(ember_net::exposition::serve(
            listener,
            Arc::new(registry),
            until_stopped(stopped.clone()),
        ))
    });
    let acceptor = TlsAcceptor::from(server_config);
    let vsock_server = vsock_listener.map(|vsock| {
        tokio::spawn(api::serve(
            vsock,
            acceptor.clone(),
            worker.clone(),
            until_stopped(stopped.clone()),
        ))
    });
    let server = tokio::spawn(api::serve(
        listener,
        acceptor,
        worker.clone(),
        until_stopped(stopped),
    ));
    let heartbeats = tokio::spawn(heartbeat::run(
        worker.clone(),
        control.clone(),
        Duration::from_millis(response.heartbeat_interval_ms.max(1)),
        response.lease_expires_at,
        drain,
    ));
    log::info!(
        "registered as {} (lease until {}); serving on {address}",
        response.worker_id,
        response.lease_expires_at
    );
    if let Some(metrics_addr) = metrics_addr {
        log::info!("serving metrics over plain HTTP on {metrics_addr}");
    }
    if announce == Announce::Stdout {
        // A vsock address is already a URL of its own.
        let url = match address.starts_with("vsock://") {
            true => address.clone(),
            false => format!("https://{address}"),
        };
        let mut lines = format!("emberd worker {} serving on {url}\n", response.worker_id);
        if let Some(metrics_addr) = metrics_addr {
            lines.push_str(&format!("emberd metrics on http://{metrics_addr}\n"));
        }
        // One write, so a reader of the first line never misses the second; a reader
        // that has gone away does not stop the worker.
        let mut stdout = std::io::stdout().lock();
        if let Err(e) = stdout
            .write_all(lines.as_bytes())
            .and_then(|()| stdout.flush())
        {
            log::warn!("could not print the serving addresses: {e}");
        }
    }

    let reason = drained
        .wait_for(Option::is_some)
        .await
        .map_err(|_| WorkerError::DrainSignal)?
        .expect("waited for Some");
    lease::drain(&worker, &control, reason).await;
    // Deregistered: no more heartbeats. Embedded (`ember up`), the process lives on and
    // joins again; a heartbeat task left running would keep this worker, its environments
    // and their VMs alive, and be refused every interval.
    heartbeats.abort();
    let _ = stop.send(());
    let _ = server.await;
    if let Some(vsock_server) = vsock_server {
        let _ = vsock_server.await;
    }
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    Ok(())
}

/// What this worker offers.
fn capacity(args: &ServeArgs) -> Capacity {
    let vcpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    // SAFETY: sysconf only reads system configuration.
    let (pages, page_size) = unsafe {
        (
            libc::sysconf(libc::_SC_PHYS_PAGES),
            libc::sysconf(libc::_SC_PAGESIZE),
        )
    };
    let physical_mib = (pages.max(0) as u64 * page_size.max(0) as u64) >> 20;
    Capacity {
        vcpus,
        memory_mib: args.memory_mib.unwrap_or(physical_mib / 2).max(1),
        max_environments: args.max_envs.max(1),
    }
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "emberd".to_owned())
}

fn read(path: &Path) -> Result<String, WorkerError> {
    std::fs::read_to_string(path).map_err(|source| WorkerError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// A secret file's text, refused when other users may read it (it may have leaked).
fn read_secret(path: &Path) -> Result<String, WorkerError> {
    let error = |source| WorkerError::Read {
        path: path.to_path_buf(),
        source,
    };
    let bytes = ember_core::keydir::read_private(path)
        .map_err(error)?
        .ok_or_else(|| error(std::io::ErrorKind::NotFound.into()))?;
    String::from_utf8(bytes.to_vec()).map_err(|_| {
        error(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "not UTF-8 text",
        ))
    })
}
