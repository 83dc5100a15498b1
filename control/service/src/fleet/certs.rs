//! The fleet's certificates. Two CAs of `DIR/tls/` (see [`crate::tls`]) sign them:
//!
//! - the **fleet CA**, which API clients never trust, signs what the fleet's members show
//!   each other: each worker's certificate, from the CSR it registers with (control keeps
//!   only the CSR's public key, whose signature proves the worker holds the private key,
//!   and writes everything else itself: common name = the worker id, which is how the
//!   fleet listener knows who calls; one SAN, [`ember_fleet::tls::worker_name`] of the id,
//!   which control checks when it calls the worker, never a name the worker asked for;
//!   usable as server and client; valid until shortly after the worker's lease ends), and
//!   control's client certificate for calling workers (common name
//!   [`ember_fleet::tls::CONTROL_NAME`], which workers require);
//! - the **local (API) CA**, which workers are given as `--ca`, signs the fleet listener's
//!   server certificate (for `localhost`, the loopback addresses, the listen address and
//!   any names the operator adds): it is control's own, as the API's is.
//!
//! Control's own two are made afresh (with fresh keys) at every start and never stored.

use std::net::IpAddr;
use std::path::Path;

use rcgen::{
    CertificateParams, CertificateSigningRequestParams, ExtendedKeyUsagePurpose, Issuer, KeyPair,
    KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};

use crate::tls::{self, TlsError};
use ember_core::clock;

/// How long control's own fleet certificates last (they are made again at every start).
const OWN_LIFETIME: u64 = 397 * 86_400;

/// A worker's certificate outlives its lease by this much, so it can finish what runs and
/// deregister after the lease ends.
pub const WORKER_GRACE: u64 = 3600;

/// A certificate and its private key, PEM.
pub struct PemPair {
    pub certificate: String,
    pub key: String,
}

impl std::fmt::Debug for PemPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PemPair").finish_non_exhaustive()
    }
}

/// The fleet CA and the local CA, ready to sign.
pub struct FleetCa {
    ca_pem: String,
    issuer: Issuer<'static, KeyPair>,
    /// The local CA, for the fleet listener's own certificate.
    local: Issuer<'static, KeyPair>,
}

impl std::fmt::Debug for FleetCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FleetCa").finish_non_exhaustive()
    }
}

impl FleetCa {
    /// The CAs of `data_dir`, created on first use.
    pub fn open(data_dir: &Path) -> Result<FleetCa, TlsError> {
        let (ca_pem, key) = tls::fleet_ca(data_dir)?;
        let issuer = Issuer::from_ca_cert_pem(&ca_pem, key)?;
        let (local_pem, local_key) = tls::local_ca(data_dir)?;
        let local = Issuer::from_ca_cert_pem(&local_pem, local_key)?;
        Ok(FleetCa {
            ca_pem,
            issuer,
            local,
        })
    }

    /// The fleet CA's certificate (PEM): what control and workers trust for each other's
    /// certificates.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Signs the public key of a worker's CSR (PEM) as worker `worker_id`, valid until
    /// `not_after` (Unix seconds).
    pub fn sign_worker(
        &self,
        csr_pem: &str,
        worker_id: &str,
        not_after: u64,
    ) -> Result<String, TlsError> {
        let csr = CertificateSigningRequestParams::from_pem(csr_pem)?;
        let mut params = leaf(worker_id, not_after)?;
        params.subject_alt_names = vec![san(&ember_fleet::tls::worker_name(worker_id))?];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        Ok(params.signed_by(&csr.public_key, &self.issuer)?.pem())
    }

    /// The fleet listener's certificate, from the local CA, for `listen` and `extra`
    /// host names.
    pub fn listener(&self, listen: IpAddr, extra: &[String]) -> Result<PemPair, TlsError> {
        let mut params = leaf("ember-control fleet", clock::now_unix() + OWN_LIFETIME)?;
        params.subject_alt_names = tls::required_names(listen);
        for name in extra {
            params.subject_alt_names.push(san(name)?);
        }
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        issue(params, &self.local)
    }

    /// Control's client certificate for calling workers.
    pub fn control_client(&self) -> Result<PemPair, TlsError> {
        let mut params = leaf(
            ember_fleet::tls::CONTROL_NAME,
            clock::now_unix() + OWN_LIFETIME,
        )?;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        issue(params, &self.issuer)
    }
}

/// A certificate of `params` for a fresh key, signed by `issuer`.
fn issue(params: CertificateParams, issuer: &Issuer<'_, KeyPair>) -> Result<PemPair, TlsError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let certificate = params.signed_by(&key, issuer)?.pem();
    Ok(PemPair {
        certificate,
        key: key.serialize_pem(),
    })
}

/// A leaf certificate's parameters: `common_name`, signing only, from an hour ago (clock
/// skew) to `not_after`.
fn leaf(common_name: &str, not_after: u64) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::default();
    params.distinguished_name = tls::name(common_name);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.use_authority_key_identifier_extension = true;
    params.not_before = tls::timestamp(clock::now_unix() as i64 - 3600)?;
    params.not_after = tls::timestamp(not_after as i64)?;
    Ok(params)
}

/// A SAN for `host`: an IP address (brackets allowed) or a DNS name.
pub fn san(host: &str) -> Result<SanType, TlsError> {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let valid = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    if !valid {
        return Err(TlsError::Invalid(format!("invalid host name {host:?}")));
    }
    Ok(SanType::DnsName(host.try_into()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::pem::PemObject;
    use rustls_pki_types::CertificateDer;

    #[test]
    fn signs_only_the_csrs_key_with_controls_own_names() {
        let dir = tempfile::tempdir().unwrap();
        let ca = FleetCa::open(dir.path()).unwrap();
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        // A worker asking to be control gets its id as its name anyway.
        let mut asked = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
        asked.distinguished_name = tls::name(ember_fleet::tls::CONTROL_NAME);
        let csr = asked.serialize_request(&key).unwrap().pem().unwrap();
        let pem = ca
            .sign_worker(&csr, "w-0123", clock::now_unix() + 60)
            .unwrap();
        let der = CertificateDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(
            ember_fleet::tls::common_name(&der).as_deref(),
            Some("w-0123")
        );
        let (_, cert) = x509_parser::parse_x509_certificate(&der).unwrap();
        let sans = &cert.subject_alternative_name().unwrap().unwrap().value;
        assert_eq!(
            sans.general_names,
            [x509_parser::extensions::GeneralName::DNSName(
                "w-0123.workers.ember"
            )]
        );
        // From the fleet CA, not the local one API clients trust.
        let fleet_ca = CertificateDer::from_pem_slice(ca.ca_pem().as_bytes()).unwrap();
        let (_, fleet_ca) = x509_parser::parse_x509_certificate(&fleet_ca).unwrap();
        cert.verify_signature(Some(fleet_ca.public_key())).unwrap();
        let (local_pem, _) = tls::local_ca(dir.path()).unwrap();
        let local = CertificateDer::from_pem_slice(local_pem.as_bytes()).unwrap();
        let (_, local) = x509_parser::parse_x509_certificate(&local).unwrap();
        assert!(cert.verify_signature(Some(local.public_key())).is_err());
        assert_eq!(cert.public_key().raw, {
            use rcgen::PublicKeyData;
            key.subject_public_key_info()
        });

        // The pieces make working TLS configurations on both sides.
        let worker = ember_fleet::tls::Identity {
            certificate_pem: &pem,
            key_pem: &key.serialize_pem(),
        };
        ember_fleet::tls::server_config(ca.ca_pem(), &worker, false).unwrap();
        let control = ca.control_client().unwrap();
        let control_der = CertificateDer::from_pem_slice(control.certificate.as_bytes()).unwrap();
        assert_eq!(
            ember_fleet::tls::common_name(&control_der).as_deref(),
            Some(ember_fleet::tls::CONTROL_NAME)
        );
        let listener = ca.listener("127.0.0.1".parse().unwrap(), &[]).unwrap();
        let listener_der = CertificateDer::from_pem_slice(listener.certificate.as_bytes()).unwrap();
        let (_, listener_cert) = x509_parser::parse_x509_certificate(&listener_der).unwrap();
        listener_cert
            .verify_signature(Some(local.public_key()))
            .unwrap();
        let identity = ember_fleet::tls::Identity {
            certificate_pem: &listener.certificate,
            key_pem: &listener.key,
        };
        ember_fleet::tls::server_config(ca.ca_pem(), &identity, true).unwrap();

        assert!(ca.sign_worker("garbage", "w-1", 1).is_err());
        assert!(san("bad host/").is_err());
        assert!(matches!(san("[::1]").unwrap(), SanType::IpAddress(_)));
        assert!(matches!(
            san("worker-1.example").unwrap(),
            SanType::DnsName(_)
        ));
    }
}
