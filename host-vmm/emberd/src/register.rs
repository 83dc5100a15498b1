//! Joining the fleet: a fresh key pair and certificate request on every start (a worker
//! is a new member each time it starts), the bootstrap token, and the certificate control
//! signs in return, kept in the state directory. Control may not be up yet when a worker
//! boots, so unreachable control is retried with backoff; a refusal (a wrong token) is
//! final.

use std::time::Duration;

use ember_fleet::messages::{Capacity, RegisterRequest, RegisterResponse};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use zeroize::Zeroizing;

use crate::control::{CallError, ControlClient};
use crate::state_dir::{self, CERT_FILE, KEY_FILE};
use crate::WorkerError;

/// The longest pause between attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What registration gave the worker.
pub struct Registration {
    pub response: RegisterResponse,
    /// The private key of the certificate in `response`, PEM.
    pub key_pem: Zeroizing<String>,
}

/// Registers with control as `name`, reachable at `address`, offering `capacity`.
pub async fn register(
    control: &ControlClient,
    state_dir: &std::path::Path,
    token: &str,
    name: &str,
    address: &str,
    capacity: Capacity,
) -> Result<Registration, WorkerError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
        .map_err(|e| WorkerError(format!("making a key: {e}")))?;
    let csr = CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .and_then(|csr| csr.pem())
        .map_err(|e| WorkerError(format!("making a certificate request: {e}")))?;
    let request = RegisterRequest {
        token: token.to_owned(),
        name: name.to_owned(),
        csr_pem: csr,
        address: address.to_owned(),
        capacity,
    };
    let mut backoff = Duration::from_millis(100);
    let response = loop {
        match control.register(&request).await {
            Ok(response) => break response,
            Err(CallError::Unreachable(reason)) => {
                log::warn!("registering: {reason}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(refused) => return Err(WorkerError(format!("registration refused: {refused}"))),
        }
    };
    let key_pem = Zeroizing::new(key.serialize_pem());
    state_dir::write_private(&state_dir.join(KEY_FILE), key_pem.as_bytes())?;
    state_dir::write_private(
        &state_dir.join(CERT_FILE),
        response.certificate_pem.as_bytes(),
    )?;
    Ok(Registration { response, key_pem })
}
