//! The fleet listener's routes. Registration is authenticated by a join token
//! (`crate::fleet::join`), which also bounds the capacity the worker may claim; every
//! other route by the worker's client certificate, whose common name is its id
//! (`crate::fleet::certs`), and only while control knows the worker and it has neither
//! left nor been revoked.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use ember_fleet::messages::{
    HeartbeatRequest, HeartbeatResponse, RegisterRequest, RegisterResponse,
};
use ember_fleet::vsock::{VsockAddr, WORKER_HOST};

use crate::api::error::ApiError;
use crate::api::request::blocking;
use crate::fleet::certs::{self, FleetCa, WORKER_GRACE};
use crate::fleet::join::{self, Refused};
use crate::service::Service;
use ember_core::clock;
use ember_core::grants::Holder;
use ember_core::random;
use ember_net::tls_serve::PeerCertificate;
use ember_store::workers::{self as registry, WorkerRow, WorkerState};

/// Longest worker name accepted.
const MAX_NAME: usize = 255;

/// The most a registration's body may hold (a name, a CSR and a token).
const MAX_REGISTRATION: usize = 64 << 10;

/// Which listener a request came through: each app carries its own as an extension.
#[derive(Clone, Copy, Debug)]
pub enum Transport {
    Tcp,
    /// A VM's hybrid vsock socket (see `super::fleet_listener`).
    HybridVsock,
}

/// What the fleet routes share.
#[derive(Debug)]
pub struct FleetApp {
    pub service: Arc<Service>,
    pub ca: FleetCa,
}

/// The fleet listener's application.
pub fn router(app: Arc<FleetApp>) -> Router {
    Router::new()
        .route(
            ember_fleet::REGISTER,
            post(register).layer(DefaultBodyLimit::max(MAX_REGISTRATION)),
        )
        .route(ember_fleet::HEARTBEAT, post(heartbeat))
        .route(ember_fleet::DEREGISTER, post(deregister))
        .route(
            &format!("{}/{{account}}/{{artifact}}", ember_fleet::ARTIFACTS),
            get(artifact),
        )
        .with_state(app)
}

async fn register(
    State(app): State<Arc<FleetApp>>,
    Extension(transport): Extension<Transport>,
    Json(mut request): Json<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    let name_ok =
        (1..=MAX_NAME).contains(&request.name.len()) && !request.name.chars().any(char::is_control);
    if !name_ok {
        return Err(ApiError::invalid_parameter("Invalid worker name"));
    }
    request.address = address_over(transport, &request.address)?;
    check_address(&request.address)?;
    let capacity = request.capacity;
    if capacity.vcpus == 0 || capacity.max_environments == 0 || capacity.memory_mib == 0 {
        return Err(ApiError::invalid_parameter(
            "A worker needs at least one vCPU, some memory and one environment",
        ));
    }
    let fleet = &app.service.fleet;
    let now = clock::now_unix();
    let pool = app.service.registry.pool();
    let token_id = join::admit(pool, &request.token, &capacity, now)
        .await
        .map_err(|refused| {
            tracing::warn!(name = %request.name, %refused, "registration refused");
            match refused {
                Refused::OverCeiling(_) => ApiError::invalid_parameter(refused.to_string()),
                Refused::Sql(e) => ApiError::from(e),
                Refused::Invalid | Refused::Unusable { .. } => forbidden(&refused.to_string()),
            }
        })?;
    let lease_expires_at = now + fleet.settings.lease.as_secs();
    let id = format!(
        "w-{}",
        random::hex(&random::bytes::<8>().map_err(|e| ApiError::service(e.to_string()))?)
    );
    let certificate_pem = app
        .ca
        .sign_worker(&request.csr_pem, &id, lease_expires_at + WORKER_GRACE)
        .map_err(|e| ApiError::invalid_parameter(format!("Cannot sign the request: {e}")))?;
    let row = WorkerRow {
        id: id.clone(),
        name: request.name,
        address: request.address,
        capacity,
        registered_at: now,
        last_heartbeat: now,
        lease_expires_at,
        state: WorkerState::Active,
        token_id,
    };
    registry::insert(pool, &row).await?;
    fleet.workers.add(&row);
    fleet.provisioned.changed();
    app.service.events.worker_joined().await;
    tracing::info!(
        worker = %id,
        name = %row.name,
        address = %row.address,
        token = %row.token_id,
        lease_expires_at,
        "worker registered"
    );
    Ok(Json(RegisterResponse {
        worker_id: id,
        certificate_pem,
        ca_pem: app.ca.ca_pem().to_owned(),
        lease_expires_at,
        heartbeat_interval_ms: fleet.settings.heartbeat.as_millis() as u64,
    }))
}

async fn heartbeat(
    State(app): State<Arc<FleetApp>>,
    Extension(peer): Extension<PeerCertificate>,
    Json(report): Json<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let id = worker_id(&peer)?;
    let fleet = &app.service.fleet;
    let now = clock::now_unix();
    let heard = fleet
        .workers
        .heartbeat(&id, &report, now, |lease| {
            fleet.settings.draining(lease, now)
        })
        .ok_or_else(|| forbidden("Unknown or departed worker"))?;
    if heard.persist {
        tracing::debug!(worker = %id, state = heard.state.as_str(), "heartbeat");
        // The live view is what routing uses; a failed write only delays the stored copy.
        if let Err(e) = registry::update(app.service.registry.pool(), &id, now, heard.state).await {
            tracing::warn!(worker = %id, error = %e, "could not record a heartbeat");
        }
    }
    let drain = heard.state == WorkerState::Draining;
    // The worker releases whatever the list leaves out: all of it once it drains.
    let provisioned = if drain {
        Vec::new()
    } else {
        fleet.provisioned.assignments(fleet, &id).await
    };
    for share in &provisioned {
        let memory_mib = u64::from(share.function.memory_mib);
        fleet
            .workers
            .expect(&id, &share.function.key, memory_mib, share.count);
    }
    Ok(Json(HeartbeatResponse {
        lease_expires_at: heard.lease_expires_at,
        drain,
        provisioned,
    }))
}

async fn deregister(
    State(app): State<Arc<FleetApp>>,
    Extension(peer): Extension<PeerCertificate>,
) -> Result<StatusCode, ApiError> {
    let id = worker_id(&peer)?;
    if known(&app, &id).is_none() {
        return Err(forbidden("Unknown or departed worker"));
    }
    app.service.fleet.workers.set_state(&id, WorkerState::Gone);
    registry::set_state(app.service.registry.pool(), &id, WorkerState::Gone).await?;
    app.service.fleet.provisioned.changed();
    tracing::info!(worker = %id, "worker deregistered");
    Ok(StatusCode::NO_CONTENT)
}

/// A function's module, decrypted, for a worker holding a grant issued to it for it.
async fn artifact(
    State(app): State<Arc<FleetApp>>,
    Extension(peer): Extension<PeerCertificate>,
    Path((account, artifact)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let id = worker_id(&peer)?;
    if known(&app, &id).is_none() {
        return Err(forbidden("Unknown or departed worker"));
    }
    let grant = headers
        .get(ember_fleet::GRANT_HEADER)
        .and_then(|value| value.to_str().ok())
        .ok_or_else(|| forbidden("No grant"))?;
    let service = app.service.clone();
    let granted = service
        .grants
        .verify(grant, &artifact, Holder::Worker(&id), clock::now_unix())
        .map_err(|e| forbidden(&format!("Code download refused: {e}")))?;
    if granted.account != account {
        return Err(forbidden(
            "Code download refused: grant is for another account",
        ));
    }
    let bytes = blocking(move || service.artifacts.get(&account, &artifact)).await??;
    tracing::debug!(worker = %id, artifact = %granted.artifact_id, "served code");
    Ok(([(header::CONTENT_TYPE, "application/wasm")], bytes).into_response())
}

/// The worker a request's client certificate names.
fn worker_id(peer: &PeerCertificate) -> Result<String, ApiError> {
    peer.0
        .as_ref()
        .and_then(ember_fleet::tls::common_name)
        .ok_or_else(|| forbidden("A worker certificate is required"))
}

/// The state of worker `id`, unless it is unknown or has left.
fn known(app: &FleetApp, id: &str) -> Option<WorkerState> {
    app.service
        .fleet
        .workers
        .state(id)
        .filter(|state| !state.departed())
}

/// The address control records for a worker that claims `claimed` over `transport`.
/// Over TCP it may not be the vsock worker name; over vsock it must be `vsock://CID:PORT`
/// and becomes `worker.vsock.ember:PORT`, whatever CID the worker claimed: control
/// reaches it through the socket its registration came through, into that VM only.
fn address_over(transport: Transport, claimed: &str) -> Result<String, ApiError> {
    match transport {
        Transport::Tcp => {
            let host = claimed.rsplit_once(':').map_or(claimed, |(host, _)| host);
            if host.eq_ignore_ascii_case(WORKER_HOST) || claimed.starts_with("vsock://") {
                return Err(ApiError::invalid_parameter(format!(
                    "Worker address {claimed:?} is for workers registering over vsock"
                )));
            }
            Ok(claimed.to_owned())
        }
        Transport::HybridVsock => {
            let vsock: VsockAddr = claimed.parse().map_err(|e: String| {
                ApiError::invalid_parameter(format!("Invalid worker address: {e}"))
            })?;
            Ok(format!("{WORKER_HOST}:{}", vsock.port))
        }
    }
}

/// Checks that a worker's address is `host:port` with a host control can dial.
fn check_address(address: &str) -> Result<(), ApiError> {
    let invalid = || ApiError::invalid_parameter(format!("Invalid worker address {address:?}"));
    let (host, port) = address.rsplit_once(':').ok_or_else(invalid)?;
    let port_ok = port.parse::<u16>().is_ok_and(|p| p != 0);
    if !port_ok || certs::san(host).is_err() {
        return Err(invalid());
    }
    Ok(())
}

fn forbidden(message: &str) -> ApiError {
    ApiError::new(StatusCode::FORBIDDEN, "AccessDeniedException", message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_addresses_are_host_and_port() {
        for good in ["127.0.0.1:7000", "[::1]:7000", "worker-1.lan:7000"] {
            assert!(check_address(good).is_ok(), "{good}");
        }
        for bad in ["127.0.0.1", "127.0.0.1:0", "127.0.0.1:x", ":7000", "a b:1"] {
            assert!(check_address(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn vsock_addresses_are_controls_own_and_only_over_vsock() {
        let over = |transport, claimed| address_over(transport, claimed).map_err(drop);
        assert_eq!(
            over(Transport::Tcp, "127.0.0.1:7000"),
            Ok("127.0.0.1:7000".to_owned())
        );
        assert!(over(Transport::Tcp, "worker.vsock.ember:7000").is_err());
        assert!(over(Transport::Tcp, "vsock://3:7000").is_err());
        assert_eq!(
            over(Transport::HybridVsock, "vsock://3:7000"),
            Ok("worker.vsock.ember:7000".to_owned())
        );
        // Another VM's CID changes nothing: the socket it came through decides.
        assert_eq!(
            over(Transport::HybridVsock, "vsock://42:7000"),
            over(Transport::HybridVsock, "vsock://3:7000")
        );
        for bad in ["127.0.0.1:7000", "/tmp/other.sock", "vsock://3"] {
            assert!(over(Transport::HybridVsock, bad).is_err(), "{bad}");
        }
    }
}
