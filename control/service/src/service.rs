//! What the HTTP edge shares: every part of the service, built here from the data
//! directory, plus the authenticated caller of each request. The parts below the edge
//! (the fleet, the router's [`Invoker`], the event queue) each get only what they need.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use tokio::sync::Semaphore;

use crate::events::{EventSettings, Events};
use crate::fleet::metrics::WorkersByState;
use crate::fleet::{Fleet, FleetSettings};
use crate::logs::{LogSettings, Logs};
use crate::metrics::Metrics;
use crate::router::Invoker;
use ember_core::artifacts::{ArtifactError, ArtifactStore};
use ember_core::grants::GrantIssuer;
use ember_core::keys::{KeyError, KeySource, Keyring};
use ember_core::package::Limits;
use ember_core::roles::{self, RoleIssuer};
use ember_core::sealed::Sealer;
use ember_store::{sealing, Registry, RegistryError};

/// Settings a deployment may change.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The region name in ARNs and signatures (clients pass it as `--region`).
    pub region: String,
    /// Bytes of code (sum of `CodeSize` over stored artifacts) one account may keep, like
    /// Lambda's 75 GB code storage quota.
    pub code_storage_limit: u64,
    /// Upload limits for packages.
    pub package_limits: Limits,
    /// Heartbeats and leases of the worker fleet.
    pub fleet: FleetSettings,
    /// How long function logs are kept, and how many.
    pub logs: LogSettings,
    /// Retries, maximum age and parallelism of asynchronous invocations.
    pub events: EventSettings,
    /// How long execution-role credentials last.
    pub role_lifetime: Duration,
    /// What a client may hold of the API and fleet listeners, and of request bodies.
    pub requests: RequestLimits,
}

/// Limits on what clients, strangers included, make the service hold.
#[derive(Clone, Copy, Debug)]
pub struct RequestLimits {
    /// Connections, handshake, header and body timeouts of the API and fleet listeners.
    pub listener: ember_net::limits::Limits,
    /// Bytes of request bodies the API reads at once (by `Content-Length`, or the largest
    /// body for one without): past it, a request waits for room, for up to `body_wait`,
    /// then is refused with `TooManyRequestsException`.
    pub body_memory: usize,
    /// How long a request waits for room to read its body.
    pub body_wait: Duration,
}

impl Default for RequestLimits {
    /// The listener defaults, 512 MiB of bodies (six of the largest at once) and 10 s.
    fn default() -> RequestLimits {
        RequestLimits {
            listener: ember_net::limits::Limits::DEFAULT,
            body_memory: 512 << 20,
            body_wait: Duration::from_secs(10),
        }
    }
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            region: "local".to_owned(),
            code_storage_limit: 75 * 1000 * 1000 * 1000,
            package_limits: Limits::default(),
            fleet: FleetSettings::default(),
            logs: LogSettings::default(),
            events: EventSettings::default(),
            role_lifetime: roles::DEFAULT_LIFETIME,
            requests: RequestLimits::default(),
        }
    }
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
}

/// The service's shared state, behind an `Arc` in the HTTP application.
#[derive(Debug)]
pub struct Service {
    pub data_dir: PathBuf,
    pub registry: Registry,
    /// Synchronous (file I/O and AES): call it from `spawn_blocking`.
    pub artifacts: ArtifactStore,
    pub settings: Settings,
    /// Mints and verifies execution-role credentials.
    pub roles: Arc<RoleIssuer>,
    /// Signs and checks the artifact-scoped grants code downloads need.
    pub grants: Arc<GrantIssuer>,
    /// The workers and the invocations running on them.
    pub fleet: Arc<Fleet>,
    /// Function logs: recorded after each invocation, stored by a background writer.
    pub logs: Arc<Logs>,
    /// What Prometheus scrapes from the metrics listener.
    pub metrics: Arc<Metrics>,
    /// Runs invocations on the fleet.
    pub invoker: Arc<Invoker>,
    /// Asynchronous invocations.
    pub events: Arc<Events>,
    /// Room for request bodies being read, one permit a byte
    /// ([`RequestLimits::body_memory`]).
    pub body_reads: Arc<Semaphore>,
}

impl Service {
    /// Opens everything that lives in `data_dir`: the SQLite registry (or `database_url`
    /// when given), the master keys from `keys` and the artifact store.
    pub async fn open(
        data_dir: &Path,
        database_url: Option<&str>,
        keys: KeySource,
        settings: Settings,
    ) -> Result<Service, OpenError> {
        let keyring = Keyring::open(keys)?;
        let sealer = Arc::new(Sealer::new(keyring.clone()));
        let registry = match database_url {
            Some(url) => Registry::open(url).await?,
            None => Registry::open_sqlite(data_dir).await?,
        }
        .with_sealer(sealer);
        // Secrets stored before they were sealed, or under a key rotated away while the
        // service was down, are sealed under the active key before anything reads them.
        let resealed = sealing::reseal_all(&registry)
            .await
            .map_err(RegistryError::Sql)?;
        if resealed.resealed > 0 {
            tracing::info!(
                values = resealed.resealed,
                "sealed database secrets under the active master key"
            );
        }
        let artifacts = ArtifactStore::open(data_dir, keyring)?;
        let mut roles = RoleIssuer::load_or_create(data_dir)?;
        roles.set_lifetime(settings.role_lifetime);
        let roles = Arc::new(roles);
        let grants = Arc::new(GrantIssuer::load_or_create(data_dir)?);
        let fleet = Arc::new(Fleet::new(
            settings.fleet.clone(),
            registry.clone(),
            grants.clone(),
            settings.region.clone(),
        ));
        let logs = Arc::new(Logs::start(registry.pool().clone(), settings.logs.clone()));
        let workers: Box<dyn Collector> = Box::new(WorkersByState(fleet.workers.clone()));
        let metrics = Arc::new(Metrics::new([workers]));
        let invoker = Arc::new(Invoker {
            registry: registry.clone(),
            fleet: fleet.clone(),
            roles: roles.clone(),
            logs: logs.clone(),
            metrics: metrics.clone(),
        });
        let events = Arc::new(Events::new(invoker.clone(), settings.events.clone()));
        let body_reads = Arc::new(Semaphore::new(
            settings.requests.body_memory.min(Semaphore::MAX_PERMITS),
        ));
        Ok(Service {
            data_dir: data_dir.to_owned(),
            registry,
            artifacts,
            settings,
            roles,
            grants,
            fleet,
            logs,
            metrics,
            invoker,
            events,
            body_reads,
        })
    }
}

/// Who sent a request, as established by its signature. Inserted into every authenticated
/// request's extensions; handlers take it with `Extension<Principal>` and act only within
/// `account_id`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Principal {
    /// The 12-digit account the request acts for.
    pub account_id: String,
    /// The access key that signed it.
    pub access_key_id: String,
    /// The execution role, when the request was signed with a role's temporary
    /// credentials rather than an account's own keys.
    pub role: Option<String>,
}
