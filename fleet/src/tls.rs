//! TLS for the fleet: TLS 1.3 only, AES-GCM suites only (AES-128-GCM and AES-256-GCM with
//! SHA-256/384). ChaCha20 and TLS 1.2 are left out on purpose: the transport is specified
//! as AES-GCM.
//!
//! Two CAs take part. Control's fleet listener shows a certificate from control's API CA
//! (`DIR/ca.pem`, what workers are given as `--ca`): it is control's own, like the API's.
//! Everything control issues for the fleet comes from its *fleet CA* instead, which API
//! clients never trust: each worker's certificate (named [`worker_name`] of its id) and
//! control's client certificate ([`CONTROL_NAME`]). A worker learns the fleet CA at
//! registration and trusts only it for who calls its API.

use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{ring, CryptoProvider};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Why a TLS configuration could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("invalid PEM ({what}): {reason}")]
    Pem { what: &'static str, reason: String },
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
    #[error("client certificate verifier: {0}")]
    Verifier(String),
}

/// The common name of control's client certificate. Workers serve only this peer: every
/// worker's certificate comes from the same fleet CA, and a worker must not invoke another.
pub const CONTROL_NAME: &str = "ember-control";

/// The domain of the names control gives workers in their certificates.
pub const WORKERS_DOMAIN: &str = "workers.ember";

/// The only name in worker `id`'s certificate, and the name control checks when it calls
/// that worker: control chooses it, so a worker can neither pick a name another service
/// answers to nor pass for another worker.
pub fn worker_name(id: &str) -> String {
    format!("{id}.{WORKERS_DOMAIN}")
}

/// The worker id in a name made by [`worker_name`].
pub fn worker_of(name: &str) -> Option<&str> {
    name.strip_suffix(WORKERS_DOMAIN)?.strip_suffix('.')
}

/// A certificate chain and its key, PEM.
pub struct Identity<'a> {
    pub certificate_pem: &'a str,
    pub key_pem: &'a str,
}

/// ring with only the AES-GCM TLS 1.3 suites.
pub fn provider() -> Arc<CryptoProvider> {
    let mut provider = ring::default_provider();
    provider.cipher_suites = vec![
        ring::cipher_suite::TLS13_AES_256_GCM_SHA384,
        ring::cipher_suite::TLS13_AES_128_GCM_SHA256,
    ];
    Arc::new(provider)
}

/// The roots holding just the CA(s) in `ca_pem`.
pub fn roots(ca_pem: &str) -> Result<Arc<RootCertStore>, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| pem("CA", e))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(TlsError::Pem {
            what: "CA",
            reason: "no certificate".into(),
        });
    }
    Ok(Arc::new(roots))
}

/// A server that requires a client certificate from `ca_pem` (the fleet CA) — or, when
/// `allow_anonymous` (control's fleet listener, for registration), accepts clients without
/// one and leaves the check to the request handler.
pub fn server_config(
    ca_pem: &str,
    identity: &Identity<'_>,
    allow_anonymous: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiClientVerifier::builder_with_provider(roots(ca_pem)?, provider.clone());
    let verifier = if allow_anonymous {
        verifier.allow_unauthenticated()
    } else {
        verifier
    }
    .build()
    .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let (chain, key) = parse_identity(identity)?;
    let config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)?;
    Ok(Arc::new(config))
}

/// A client trusting only `ca_pem`, presenting `identity` when given (every fleet request
/// but registration).
pub fn client_config(
    ca_pem: &str,
    identity: Option<&Identity<'_>>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = provider();
    let verifier = WebPkiServerVerifier::builder_with_provider(roots(ca_pem)?, provider.clone())
        .build()
        .map_err(|e| TlsError::Verifier(e.to_string()))?;
    let builder = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_webpki_verifier(verifier);
    let config = match identity {
        Some(identity) => {
            let (chain, key) = parse_identity(identity)?;
            builder.with_client_auth_cert(chain, key)?
        }
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The first common name in a certificate's subject: control names workers by their id
/// there, and itself [`CONTROL_NAME`].
pub fn common_name(cert: &CertificateDer<'_>) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(cert).ok()?;
    let name = cert.subject().iter_common_name().next()?;
    name.as_str().ok().map(str::to_owned)
}

fn parse_identity(
    identity: &Identity<'_>,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let chain = CertificateDer::pem_slice_iter(identity.certificate_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem("certificate", e))?;
    let key = PrivateKeyDer::from_pem_slice(identity.key_pem.as_bytes())
        .map_err(|e| pem("private key", e))?;
    Ok((chain, key))
}

fn pem(what: &'static str, e: rustls_pki_types::pem::Error) -> TlsError {
    TlsError::Pem {
        what,
        reason: e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_tls13_aes_gcm_is_offered() {
        let provider = provider();
        let names: Vec<String> = provider
            .cipher_suites
            .iter()
            .map(|s| format!("{:?}", s.suite()))
            .collect();
        assert_eq!(
            names,
            ["TLS13_AES_256_GCM_SHA384", "TLS13_AES_128_GCM_SHA256"]
        );
    }

    #[test]
    fn builds_both_sides_from_one_ca() {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = params.self_signed(&ca_key).unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["worker-1".to_owned()])
            .unwrap()
            .signed_by(&key, &rcgen::Issuer::new(params, &ca_key))
            .unwrap();
        let identity = Identity {
            certificate_pem: &leaf.pem(),
            key_pem: &key.serialize_pem(),
        };
        let mut named = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        named.distinguished_name = rcgen::DistinguishedName::new();
        assert_eq!(common_name(named.self_signed(&key).unwrap().der()), None);
        named
            .distinguished_name
            .push(rcgen::DnType::CommonName, CONTROL_NAME);
        let named = named.self_signed(&key).unwrap();
        assert_eq!(common_name(named.der()).as_deref(), Some(CONTROL_NAME));
        server_config(&ca.pem(), &identity, false).unwrap();
        server_config(&ca.pem(), &identity, true).unwrap();
        client_config(&ca.pem(), Some(&identity)).unwrap();
        client_config(&ca.pem(), None).unwrap();
        assert_eq!(worker_of(&worker_name("w-1")), Some("w-1"));
        assert_eq!(worker_of("w-1.workers.ember.evil"), None);
        assert_eq!(worker_of("w-1workers.ember"), None);
        assert!(matches!(
            client_config("not pem", None),
            Err(TlsError::Pem { .. })
        ));
    }
}
