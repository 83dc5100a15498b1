//! Joining the fleet: a fresh key pair and certificate request on every start (a worker
//! is a new member each time it starts), the join token, and the certificate control
//! signs in return, kept in the state directory. Control may not be up yet when a worker
//! boots, so unreachable control is retried with backoff; a refusal (a wrong token) is
//! final.

use std::io;
use std::time::Duration;

use ember_fleet::messages::{Capacity, RegisterRequest, RegisterResponse};
use rcgen::{CertificateParams, KeyPair, PKCS_ECDSA_P256_SHA256};
use zeroize::Zeroizing;

use crate::control::{CallError, ControlClient};
use crate::state_dir::{self, CERT_FILE, KEY_FILE};

/// Why the worker could not join the fleet.
#[derive(Debug, thiserror::Error)]
pub enum RegisterError {
    #[error("making a key: {0}")]
    Key(#[source] rcgen::Error),
    #[error("making a certificate request: {0}")]
    Request(#[source] rcgen::Error),
    #[error("registration refused: {0}")]
    Refused(#[source] CallError),
    #[error("keeping the certificate: {0}")]
    Save(#[source] io::Error),
}

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
) -> Result<Registration, RegisterError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(RegisterError::Key)?;
    let csr = CertificateParams::new(Vec::<String>::new())
        .and_then(|params| params.serialize_request(&key))
        .and_then(|csr| csr.pem())
        .map_err(RegisterError::Request)?;
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
            Err(unreachable @ CallError::Unreachable(_)) => {
                log::warn!("registering: {unreachable}; trying again in {backoff:?}");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(refused) => return Err(RegisterError::Refused(refused)),
        }
    };
    let key_pem = Zeroizing::new(key.serialize_pem());
    state_dir::write_private(&state_dir.join(KEY_FILE), key_pem.as_bytes())
        .and_then(|()| {
            state_dir::write_private(
                &state_dir.join(CERT_FILE),
                response.certificate_pem.as_bytes(),
            )
        })
        .map_err(RegisterError::Save)?;
    Ok(Registration { response, key_pem })
}
