//! TLS for the public API: the operator's certificate, or one from a local CA that the
//! service makes itself, so a single command gives a working HTTPS endpoint.
//!
//! The local CA lives in `DIR/tls/` (folder 0700, keys 0600, every file written
//! atomically): `ca.pem` and `ca.key` (ECDSA P-256, "ember local CA", ten years), and
//! `server.pem`/`server.key`, a server certificate it signed for `localhost`,
//! `127.0.0.1`, `::1` and the listen address. The CA certificate is published as
//! `DIR/ca.pem` for clients (`AWS_CA_BUNDLE`). Later starts reuse everything; the server
//! certificate is issued again when it is missing, unreadable, not signed by the CA, does
//! not cover the listen address or expires within 30 days. The CA itself is never replaced
//! silently: clients trust it.
//!
//! The worker fleet has a CA of its own beside it, `fleet-ca.pem` and `fleet-ca.key`
//! ("ember fleet CA", never published): workers' certificates come from it, so that no
//! certificate a worker holds is one API clients accept (`crate::fleet::certs`).

use std::fs;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, PKCS_ECDSA_P256_SHA256,
};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::certificate::X509Certificate;
use x509_parser::extensions::GeneralName;
use zeroize::Zeroizing;

use ember_core::atomic::{self, with_path};
use ember_core::clock;
use ember_core::keydir;
use ember_core::lock::{self, Mode};

/// The local CA's folder inside the data directory.
pub const DIR: &str = "tls";

/// The published CA certificate's name in the data directory.
pub const CA_FILE: &str = "ca.pem";

const CA_CERT: &str = "ca.pem";
const CA_KEY: &str = "ca.key";
const FLEET_CA_CERT: &str = "fleet-ca.pem";
const FLEET_CA_KEY: &str = "fleet-ca.key";
const SERVER_CERT: &str = "server.pem";
const SERVER_KEY: &str = "server.key";

const DAY: i64 = 86_400;
const CA_LIFETIME: i64 = 3650 * DAY;
/// Within the 398 days clients accept for a server certificate.
const SERVER_LIFETIME: i64 = 397 * DAY;
const RENEW_BEFORE: i64 = 30 * DAY;

/// A server certificate chain and its private key.
#[derive(Debug)]
pub struct Identity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: PrivateKeyDer<'static>,
}

/// Why TLS could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("certificate: {0}")]
    Certificate(#[from] rcgen::Error),
    #[error("TLS: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("{0}")]
    Invalid(String),
}

/// The certificate chain and key in the PEM files `cert` and `key`.
pub fn from_files(cert: &Path, key: &Path) -> Result<Identity, TlsError> {
    let pem_error = |path: &Path, e: rustls_pki_types::pem::Error| {
        TlsError::Invalid(format!("{}: {e}", path.display()))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .map_err(|e| pem_error(cert, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| pem_error(cert, e))?;
    if chain.is_empty() {
        return Err(TlsError::Invalid(format!(
            "{}: no certificate in it",
            cert.display()
        )));
    }
    let key = PrivateKeyDer::from_pem_slice(read_private_key(key)?.as_bytes())
        .map_err(|e| pem_error(key, e))?;
    Ok(Identity { chain, key })
}

/// The PEM text of the private key `path`, refused when other users may read or write it:
/// it may have leaked already.
fn read_private_key(path: &Path) -> Result<Zeroizing<String>, TlsError> {
    let bytes = keydir::read_private(path)?
        .ok_or_else(|| with_path(io::Error::from(io::ErrorKind::NotFound), path))?;
    String::from_utf8(bytes.to_vec())
        .map(Zeroizing::new)
        .map_err(|_| TlsError::Invalid(format!("{}: not PEM text", path.display())))
}

/// The local CA's server certificate for a service listening on `listen`, creating the
/// CA, the certificate and `DIR/ca.pem` as needed.
pub fn local(data_dir: &Path, listen: IpAddr) -> Result<Identity, TlsError> {
    let dir = data_dir.join(DIR);
    let (ca_pem, ca_key) = local_ca(data_dir)?;
    let published = data_dir.join(CA_FILE);
    tracing::info!(
        ca = %published.display(),
        "serving a certificate from the local CA; clients trust it with AWS_CA_BUNDLE={}",
        published.display()
    );
    let _lock = lock::lock(&dir.join(".lock"), Mode::Exclusive)?;
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes())
        .map_err(|e| TlsError::Invalid(format!("{CA_CERT}: {e}")))?;
    let names = required_names(listen);
    let now = clock::now_unix() as i64;
    if let Some(identity) = current_server(&dir, &ca_der, &names, now) {
        return Ok(identity);
    }
    let issuer = Issuer::from_ca_cert_der(&ca_der, ca_key)?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
    let mut params = CertificateParams::default();
    params.distinguished_name = name("ember-control");
    params.subject_alt_names = names.clone();
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    params.not_before = timestamp(now - 3600)?;
    params.not_after = timestamp(now + SERVER_LIFETIME)?;
    let cert = params.signed_by(&key, &issuer)?;
    // Key first: a crash in between leaves a pair that does not match, issued anew.
    write(&dir.join(SERVER_KEY), key.serialize_pem().as_bytes(), 0o600)?;
    write(&dir.join(SERVER_CERT), cert.pem().as_bytes(), 0o644)?;
    tracing::info!(names = ?names, "issued a server certificate from the local CA");
    Ok(Identity {
        chain: vec![cert.der().clone()],
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    })
}

/// The local CA's certificate (PEM) and key, creating them and publishing `DIR/ca.pem` as
/// needed. Control's fleet listener shows a certificate from it too: it is control's own.
pub(crate) fn local_ca(data_dir: &Path) -> Result<(String, KeyPair), TlsError> {
    let ca = CaFiles {
        cert: CA_CERT,
        key: CA_KEY,
        common_name: "ember local CA",
    };
    let (ca_pem, ca_key) = open_ca(data_dir, &ca)?;
    let published = data_dir.join(CA_FILE);
    if fs::read_to_string(&published).ok().as_deref() != Some(ca_pem.as_str()) {
        write(&published, ca_pem.as_bytes(), 0o644)?;
    }
    Ok((ca_pem, ca_key))
}

/// The fleet CA's certificate (PEM) and key, created on first use; kept apart from the
/// local CA so that API clients never trust what it signs.
pub(crate) fn fleet_ca(data_dir: &Path) -> Result<(String, KeyPair), TlsError> {
    let ca = CaFiles {
        cert: FLEET_CA_CERT,
        key: FLEET_CA_KEY,
        common_name: "ember fleet CA",
    };
    open_ca(data_dir, &ca)
}

/// Where a CA of `DIR/tls/` lives and what it is called.
struct CaFiles {
    cert: &'static str,
    key: &'static str,
    common_name: &'static str,
}

/// The CA `ca` of `data_dir`, made on first use, under the folder's lock.
fn open_ca(data_dir: &Path, ca: &CaFiles) -> Result<(String, KeyPair), TlsError> {
    let dir = data_dir.join(DIR);
    atomic::private_dir(&dir).map_err(|e| with_path(e, &dir))?;
    // Two services starting on one data directory must not make two CAs.
    let _lock = lock::lock(&dir.join(".lock"), Mode::Exclusive)?;
    load_or_create_ca(&dir, ca)
}

/// A rustls configuration serving `identity` over TLS 1.2 or 1.3 and HTTP/1.1.
pub fn server_config(identity: Identity) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// The CA's certificate (PEM) and key, made on first use.
fn load_or_create_ca(dir: &Path, ca: &CaFiles) -> Result<(String, KeyPair), TlsError> {
    let cert_path = dir.join(ca.cert);
    match fs::read_to_string(&cert_path) {
        Ok(pem) => {
            let key_path = dir.join(ca.key);
            let key = read_private_key(&key_path).map_err(|e| match e {
                TlsError::Io(e) if e.kind() == io::ErrorKind::NotFound => {
                    TlsError::Invalid(format!(
                        "{e}; without it the local CA cannot sign. Remove {} to start over \
                         with a new CA (clients must then trust the new {CA_FILE})",
                        dir.display()
                    ))
                }
                other => other,
            })?;
            let key = KeyPair::from_pem(&key)?;
            let der = CertificateDer::from_pem_slice(pem.as_bytes())
                .map_err(|e| TlsError::Invalid(format!("{}: {e}", cert_path.display())))?;
            if !key_matches(&parse(&der)?, &key) {
                return Err(TlsError::Invalid(format!(
                    "{} does not belong to {}",
                    key_path.display(),
                    cert_path.display()
                )));
            }
            Ok((pem, key))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?;
            let now = clock::now_unix() as i64;
            let mut params = CertificateParams::default();
            params.distinguished_name = name(ca.common_name);
            params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
            params.key_usages = vec![
                KeyUsagePurpose::KeyCertSign,
                KeyUsagePurpose::CrlSign,
                KeyUsagePurpose::DigitalSignature,
            ];
            params.not_before = timestamp(now - 3600)?;
            params.not_after = timestamp(now + CA_LIFETIME)?;
            let pem = params.self_signed(&key)?.pem();
            write(&dir.join(ca.key), key.serialize_pem().as_bytes(), 0o600)?;
            write(&cert_path, pem.as_bytes(), 0o644)?;
            tracing::info!(dir = %dir.display(), ca = ca.common_name, "created a CA");
            Ok((pem, key))
        }
        Err(e) => Err(with_path(e, &cert_path).into()),
    }
}

/// The stored server certificate and key, if they can serve `names` for another 30 days
/// and were signed by the CA.
fn current_server(
    dir: &Path,
    ca: &CertificateDer<'_>,
    names: &[SanType],
    now: i64,
) -> Option<Identity> {
    let chain = vec![CertificateDer::from_pem_file(dir.join(SERVER_CERT)).ok()?];
    let key_pem = fs::read_to_string(dir.join(SERVER_KEY)).ok()?;
    let key = KeyPair::from_pem(&key_pem).ok()?;
    let ca = parse(ca).ok()?;
    let cert = parse(&chain[0]).ok()?;
    let covered: Vec<SanType> = cert
        .subject_alternative_name()
        .ok()??
        .value
        .general_names
        .iter()
        .filter_map(|name| match name {
            GeneralName::DNSName(dns) => Some(SanType::DnsName((*dns).try_into().ok()?)),
            GeneralName::IPAddress(ip) => Some(SanType::IpAddress(ip_from_bytes(ip)?)),
            _ => None,
        })
        .collect();
    let usable = cert.verify_signature(Some(ca.public_key())).is_ok()
        && cert.validity().not_after.timestamp() - now > RENEW_BEFORE
        && names.iter().all(|n| covered.contains(n))
        && key_matches(&cert, &key);
    usable.then(|| Identity {
        chain,
        key: PrivateKeyDer::Pkcs8(key.serialize_der().into()),
    })
}

/// `localhost`, both loopback addresses and the address listened on (unless it is the
/// unspecified address, which no client connects to by that name).
pub(crate) fn required_names(listen: IpAddr) -> Vec<SanType> {
    let mut names = vec![
        SanType::DnsName("localhost".try_into().expect("an ASCII name")),
        SanType::IpAddress(IpAddr::V4(Ipv4Addr::LOCALHOST)),
        SanType::IpAddress(IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    let listen = SanType::IpAddress(listen);
    if !names.contains(&listen) && !matches!(listen, SanType::IpAddress(ip) if ip.is_unspecified())
    {
        names.push(listen);
    }
    names
}

fn ip_from_bytes(bytes: &[u8]) -> Option<IpAddr> {
    match bytes.len() {
        4 => Some(IpAddr::from(<[u8; 4]>::try_from(bytes).ok()?)),
        16 => Some(IpAddr::from(<[u8; 16]>::try_from(bytes).ok()?)),
        _ => None,
    }
}

fn key_matches(cert: &X509Certificate<'_>, key: &KeyPair) -> bool {
    use rcgen::PublicKeyData;
    cert.public_key().raw == key.subject_public_key_info().as_slice()
}

fn parse<'a>(der: &'a CertificateDer<'_>) -> Result<X509Certificate<'a>, TlsError> {
    x509_parser::parse_x509_certificate(der)
        .map(|(_, cert)| cert)
        .map_err(|e| TlsError::Invalid(format!("unreadable certificate: {e}")))
}

pub(crate) fn name(common_name: &str) -> DistinguishedName {
    let mut name = DistinguishedName::new();
    name.push(DnType::CommonName, common_name);
    name
}

pub(crate) fn timestamp(unix: i64) -> Result<time::OffsetDateTime, TlsError> {
    time::OffsetDateTime::from_unix_timestamp(unix)
        .map_err(|e| TlsError::Invalid(format!("certificate time: {e}")))
}

fn write(path: &Path, bytes: &[u8], mode: u32) -> Result<(), TlsError> {
    atomic::write(path, bytes, mode).map_err(|e| with_path(e, path).into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn leaf(identity: &Identity) -> Vec<u8> {
        identity.chain[0].to_vec()
    }

    #[test]
    fn creates_a_ca_once_and_reuses_everything() {
        let data = tempfile::tempdir().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let first = local(data.path(), loopback).unwrap();
        let dir = data.path().join(DIR);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(CA_KEY)), 0o600);
        assert_eq!(mode(&dir.join(SERVER_KEY)), 0o600);
        let ca = fs::read_to_string(data.path().join(CA_FILE)).unwrap();
        assert_eq!(ca, fs::read_to_string(dir.join(CA_CERT)).unwrap());

        let ca_der = CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
        let ca_cert = parse(&ca_der).unwrap();
        assert!(ca_cert.is_ca());
        assert_eq!(
            ca_cert.subject().to_string(),
            "CN=ember local CA",
            "{}",
            ca_cert.subject()
        );
        let server = parse(&first.chain[0]).unwrap();
        server.verify_signature(Some(ca_cert.public_key())).unwrap();
        assert!(server_config(first).is_ok());

        let again = local(data.path(), loopback).unwrap();
        assert_eq!(fs::read_to_string(data.path().join(CA_FILE)).unwrap(), ca);
        let reread = local(data.path(), loopback).unwrap();
        assert_eq!(leaf(&again), leaf(&reread));
    }

    #[test]
    fn issues_a_new_server_certificate_when_needed() {
        let data = tempfile::tempdir().unwrap();
        let loopback: IpAddr = "127.0.0.1".parse().unwrap();
        let first = local(data.path(), loopback).unwrap();
        let ca = fs::read_to_string(data.path().join(CA_FILE)).unwrap();

        // Another listen address.
        let other: IpAddr = "10.1.2.3".parse().unwrap();
        let moved = local(data.path(), other).unwrap();
        assert_ne!(leaf(&moved), leaf(&first));
        let names = parse(&moved.chain[0])
            .unwrap()
            .subject_alternative_name()
            .unwrap()
            .unwrap()
            .value
            .general_names
            .len();
        assert_eq!(names, 4);
        // Loopback and the unspecified address are covered by it.
        for ip in ["127.0.0.1", "::1", "0.0.0.0"] {
            let again = local(data.path(), ip.parse().unwrap()).unwrap();
            assert_eq!(leaf(&again), leaf(&moved), "{ip}");
        }

        // A key that does not match (a crash between the two writes).
        let dir = data.path().join(DIR);
        let stray = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).unwrap();
        write(
            &dir.join(SERVER_KEY),
            stray.serialize_pem().as_bytes(),
            0o600,
        )
        .unwrap();
        let fixed = local(data.path(), other).unwrap();
        assert_ne!(leaf(&fixed), leaf(&moved));

        // A certificate near its end.
        let der = fixed.chain[0].clone();
        let not_after = parse(&der).unwrap().validity().not_after.timestamp();
        let now = clock::now_unix() as i64;
        let ca_der = CertificateDer::from_pem_slice(ca.as_bytes()).unwrap();
        let names = required_names(other);
        assert!(current_server(&dir, &ca_der, &names, now).is_some());
        assert!(current_server(&dir, &ca_der, &names, not_after - RENEW_BEFORE).is_none());

        // Signed by another CA.
        let foreign = tempfile::tempdir().unwrap();
        local(foreign.path(), other).unwrap();
        let foreign_ca = fs::read(foreign.path().join(CA_FILE)).unwrap();
        let foreign_ca = CertificateDer::from_pem_slice(&foreign_ca).unwrap();
        assert!(current_server(&dir, &foreign_ca, &names, now).is_none());
        // The CA never changes on the way.
        assert_eq!(fs::read_to_string(data.path().join(CA_FILE)).unwrap(), ca);
    }

    #[test]
    fn the_fleet_ca_is_another_and_never_published() {
        let data = tempfile::tempdir().unwrap();
        let (api, _) = local_ca(data.path()).unwrap();
        let (fleet, _) = fleet_ca(data.path()).unwrap();
        assert_ne!(api, fleet);
        assert_eq!(fleet_ca(data.path()).unwrap().0, fleet, "made once");
        let der = CertificateDer::from_pem_slice(fleet.as_bytes()).unwrap();
        assert_eq!(
            parse(&der).unwrap().subject().to_string(),
            "CN=ember fleet CA"
        );
        let dir = data.path().join(DIR);
        assert_eq!(mode(&dir.join(FLEET_CA_KEY)), 0o600);
        let published = fs::read_to_string(data.path().join(CA_FILE)).unwrap();
        assert_eq!(published, api, "the API bundle holds the API CA only");
    }

    #[test]
    fn refuses_a_ca_without_its_key() {
        let data = tempfile::tempdir().unwrap();
        local(data.path(), "127.0.0.1".parse().unwrap()).unwrap();
        fs::remove_file(data.path().join(DIR).join(CA_KEY)).unwrap();
        let err = local(data.path(), "127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("start over"), "{err}");
    }

    #[test]
    fn refuses_private_keys_others_can_read() {
        let data = tempfile::tempdir().unwrap();
        local(data.path(), "127.0.0.1".parse().unwrap()).unwrap();
        let dir = data.path().join(DIR);
        for key in [CA_KEY, SERVER_KEY] {
            fs::set_permissions(dir.join(key), fs::Permissions::from_mode(0o644)).unwrap();
        }
        let err = from_files(&dir.join(SERVER_CERT), &dir.join(SERVER_KEY)).unwrap_err();
        assert!(err.to_string().contains("mode 644"), "{err}");
        let err = local(data.path(), "127.0.0.1".parse().unwrap()).unwrap_err();
        assert!(err.to_string().contains("mode 644"), "{err}");
        assert!(err.to_string().contains(CA_KEY), "{err}");
    }

    #[test]
    fn loads_the_operators_pem_files() {
        let data = tempfile::tempdir().unwrap();
        local(data.path(), "127.0.0.1".parse().unwrap()).unwrap();
        let dir = data.path().join(DIR);
        let identity = from_files(&dir.join(SERVER_CERT), &dir.join(SERVER_KEY)).unwrap();
        assert_eq!(identity.chain.len(), 1);
        assert!(server_config(identity).is_ok());
        let err = from_files(&dir.join(SERVER_KEY), &dir.join(SERVER_KEY)).unwrap_err();
        assert!(err.to_string().contains("no certificate"), "{err}");
        assert!(from_files(&dir.join(SERVER_CERT), &dir.join(SERVER_CERT)).is_err());
    }
}
