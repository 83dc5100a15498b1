//! The worker fleet as control sees it: workers join with a join token ([`join`]; the
//! bootstrap token of [`token`] is one) and get a certificate from the fleet CA ([`certs`]); from then on they heartbeat, fetch
//! code and deregister over mutual TLS on the fleet listener (the server's HTTP edge).
//! Control keeps each worker's row in SQL (`ember_store::workers`) so a restart forgets
//! none, a live view of what each one holds and runs ([`state`]), the lease rules
//! ([`leases`]), where provisioned concurrency is kept ([`provision`]), what a worker is
//! told about a version ([`function_config`]), the invocations in flight per function
//! ([`in_flight`]), and the client it calls workers with ([`client`]). Choosing a worker
//! for an invocation is the router's job. `docs/fleet.md` describes the protocol.

pub mod certs;
pub mod client;
#[cfg(test)]
pub mod fixtures;
pub mod function_config;
pub mod in_flight;
pub mod join;
pub mod leases;
pub mod metrics;
pub mod provision;
pub mod state;
pub mod token;

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ember_core::grants::GrantIssuer;
use ember_fleet::messages::Capacity;
use ember_store::Registry;

use in_flight::InFlight;

/// How the fleet is run; `Default` is production's (1 s heartbeats, 14 h leases).
#[derive(Clone, Debug)]
pub struct FleetSettings {
    /// How often workers heartbeat.
    pub heartbeat: Duration,
    /// Heartbeats a worker may miss before it is dead.
    pub missed_heartbeats: u32,
    /// How long a worker's lease lasts from its registration (at most [`leases::MAX_LEASE`]).
    pub lease: Duration,
    /// The most a worker joining with the bootstrap token may claim.
    pub bootstrap_ceiling: Capacity,
}

impl Default for FleetSettings {
    fn default() -> FleetSettings {
        FleetSettings {
            heartbeat: Duration::from_secs(1),
            missed_heartbeats: 3,
            lease: leases::MAX_LEASE,
            bootstrap_ceiling: join::DEFAULT_CEILING,
        }
    }
}

/// The fleet's state shared by the fleet listener and the invoke path, with what its
/// background tasks need: the store, the grants for provisioned code and the region.
#[derive(Debug)]
pub struct Fleet {
    pub settings: FleetSettings,
    /// Every known worker, live.
    pub workers: state::Workers,
    /// Invocations in flight per function, for reserved concurrency.
    pub in_flight: InFlight,
    /// Where provisioned concurrency is kept.
    pub provisioned: provision::Placement,
    /// Set when the fleet listener starts (it needs the CA); without it there is no worker
    /// to call anyway.
    client: OnceLock<client::WorkerClient>,
    pub registry: Registry,
    pub grants: Arc<GrantIssuer>,
    /// The region in the environment of every function (`AWS_REGION`).
    pub region: String,
}

impl Fleet {
    pub fn new(
        settings: FleetSettings,
        registry: Registry,
        grants: Arc<GrantIssuer>,
        region: String,
    ) -> Fleet {
        Fleet {
            settings,
            registry,
            grants,
            region,
            workers: state::Workers::default(),
            in_flight: InFlight::default(),
            provisioned: provision::Placement::default(),
            client: OnceLock::new(),
        }
    }

    /// The client that calls workers, once the fleet listener runs.
    pub fn client(&self) -> Option<&client::WorkerClient> {
        self.client.get()
    }

    /// Installs the client (once; later calls are ignored).
    pub fn set_client(&self, client: client::WorkerClient) {
        let _ = self.client.set(client);
    }
}
