//! Execution-role credentials: the short-lived keys a function receives to call the
//! service as its role, like the temporary credentials AWS hands a Lambda function.
//!
//! They are stateless, so any control instance sharing the data directory's keys can
//! verify them without a lookup:
//!
//! - the session token is `v2.<key id>.<account>.<expiry>.<worker>.<role>.<signature>`,
//!   where the key id is `ASIA` and 16 uppercase letters or digits, the expiry is Unix
//!   seconds, the worker is the id of the worker the credentials were handed to (the
//!   service refuses them once that worker is revoked or gone, so a rogue worker's loot
//!   dies with it), the role is the role ARN as unpadded URL-safe base64 (an ARN holds `.`
//!   and `/`), and the
//!   signature is HMAC-SHA256 of everything before it under the issuer's secret
//!   (`DIR/keys/role.key`), also unpadded URL-safe base64;
//! - the secret access key is derived from the same fields by HMAC-SHA256 under the same
//!   secret with another label, so holding a token (which travels in every request's
//!   `x-amz-security-token` header) tells nothing about the secret that signs with it.
//!
//! A request signed with such keys is checked twice: the token against the issuer's
//! secret ([`RoleIssuer::verify`]), then the request's SigV4 signature against the secret
//! derived from the token. Issued credentials are cached per (account, role) and reused
//! until five minutes before they expire, as Lambda caches a role's credentials: per
//! worker, since each worker gets its own.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::keys::{self, KeyError};
use crate::names;
use crate::random;

/// The secret's file name inside `DIR/keys/`.
pub const SECRET_FILE: &str = "role.key";

/// The prefix of temporary access key ids, as AWS's.
pub const ACCESS_KEY_PREFIX: &str = "ASIA";

/// How long issued credentials last unless configured otherwise (as a Lambda role's).
pub const DEFAULT_LIFETIME: Duration = Duration::from_secs(3600);

/// Cached credentials are replaced this long before they expire, so a function never
/// starts with keys about to lapse.
const REFRESH_MARGIN: u64 = 300;

/// The token format this module writes and reads.
const VERSION: &str = "v2";

/// Longest role ARN accepted (IAM's limit).
const MAX_ROLE: usize = 2048;

/// Longer tokens are refused before any work: a maximal role's base64 and the other
/// fields fit.
const MAX_TOKEN: usize = 3072;

/// Labels that keep the token's signature and the derived secret independent.
const TOKEN_LABEL: &[u8] = b"ember role token v1\0";
const SECRET_LABEL: &[u8] = b"ember role secret v1\0";

/// Credentials for one role of one account.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// Unix seconds; the credentials work while the time is before it.
    pub expires_at: u64,
}

impl fmt::Debug for RoleCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// What a valid session token stands for.
#[derive(Clone, PartialEq, Eq)]
pub struct RoleSession {
    pub access_key_id: String,
    pub account_id: String,
    pub role_arn: String,
    /// The worker the credentials were handed to.
    pub worker: String,
    pub expires_at: u64,
    /// The secret the request must be signed with.
    pub secret_access_key: String,
}

impl fmt::Debug for RoleSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleSession")
            .field("access_key_id", &self.access_key_id)
            .field("account_id", &self.account_id)
            .field("role_arn", &self.role_arn)
            .field("worker", &self.worker)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Why credentials could not be issued.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    #[error("invalid account id {0:?}")]
    InvalidAccount(String),
    #[error("invalid worker id {0:?}")]
    InvalidWorker(String),
    #[error("invalid role ARN {0:?}: expected 1 to {MAX_ROLE} printable ASCII characters")]
    InvalidRole(String),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Why a session token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// Not a token of this format, or one for another access key.
    #[error("malformed session token")]
    Malformed,
    #[error("session token signature does not verify")]
    BadSignature,
    #[error("session token expired at {expired_at}")]
    Expired { expired_at: u64 },
}

/// Issues and verifies role credentials with one secret.
pub struct RoleIssuer {
    mac: Hmac<Sha256>,
    lifetime: Duration,
    /// By account, role and worker.
    cache: Mutex<HashMap<(String, String, String), RoleCredentials>>,
}

impl fmt::Debug for RoleIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RoleIssuer")
            .field("lifetime", &self.lifetime)
            .finish_non_exhaustive()
    }
}

impl RoleIssuer {
    /// An issuer signing with `secret`, issuing credentials for [`DEFAULT_LIFETIME`].
    pub fn new(secret: &[u8; 32]) -> RoleIssuer {
        RoleIssuer {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length"),
            lifetime: DEFAULT_LIFETIME,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// The issuer of `data_dir`, whose secret is made on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<RoleIssuer, KeyError> {
        Ok(RoleIssuer::new(&*keys::load_or_create_secret(
            data_dir,
            SECRET_FILE,
        )?))
    }

    /// Makes credentials issued from now on last `lifetime` (whole seconds).
    pub fn set_lifetime(&mut self, lifetime: Duration) {
        self.lifetime = lifetime;
    }

    /// Credentials for `role_arn` of account `account_id`, for worker `worker`, at `now`
    /// (Unix seconds): the cached ones while they have more than five minutes left, fresh
    /// ones otherwise.
    pub fn credentials(
        &self,
        account_id: &str,
        role_arn: &str,
        worker: &str,
        now: u64,
    ) -> Result<RoleCredentials, IssueError> {
        let key = (
            account_id.to_owned(),
            role_arn.to_owned(),
            worker.to_owned(),
        );
        let mut cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(cached) = cache.get(&key) {
            if now.saturating_add(REFRESH_MARGIN) < cached.expires_at {
                return Ok(cached.clone());
            }
        }
        let fresh = self.issue(account_id, role_arn, worker, now)?;
        // Entries of roles no longer used would otherwise stay forever.
        cache.retain(|_, c| c.expires_at > now);
        cache.insert(key, fresh.clone());
        Ok(fresh)
    }

    /// Fresh credentials, bypassing the cache.
    fn issue(
        &self,
        account_id: &str,
        role_arn: &str,
        worker: &str,
        now: u64,
    ) -> Result<RoleCredentials, IssueError> {
        if names::check_account(account_id).is_err() {
            return Err(IssueError::InvalidAccount(account_id.to_owned()));
        }
        if names::check_artifact(worker).is_err() {
            return Err(IssueError::InvalidWorker(worker.to_owned()));
        }
        let role_ok = (1..=MAX_ROLE).contains(&role_arn.len())
            && role_arn.bytes().all(|b| b.is_ascii_graphic());
        if !role_ok {
            return Err(IssueError::InvalidRole(role_arn.to_owned()));
        }
        let access_key_id = random::access_key_id(ACCESS_KEY_PREFIX)?;
        let expires_at = now.saturating_add(self.lifetime.as_secs());
        let payload = format!(
            "{VERSION}.{access_key_id}.{account_id}.{expires_at}.{worker}.{}",
            URL_SAFE_NO_PAD.encode(role_arn)
        );
        let signature =
            URL_SAFE_NO_PAD.encode(self.tag(TOKEN_LABEL, &payload).finalize().into_bytes());
        Ok(RoleCredentials {
            secret_access_key: self.derive_secret(&payload),
            session_token: format!("{payload}.{signature}"),
            access_key_id,
            expires_at,
        })
    }

    /// Checks that `token` is one of this issuer's, for `access_key_id`, and not expired
    /// at `now`; returns what it stands for, with the secret the request must be signed
    /// with.
    pub fn verify(
        &self,
        access_key_id: &str,
        token: &str,
        now: u64,
    ) -> Result<RoleSession, TokenError> {
        if token.len() > MAX_TOKEN {
            return Err(TokenError::Malformed);
        }
        let (payload, signature) = token.rsplit_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .filter(|s| s.len() == 32)
            .ok_or(TokenError::Malformed)?;
        let session = parse(payload).ok_or(TokenError::Malformed)?;
        self.tag(TOKEN_LABEL, payload)
            .verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        if session.access_key_id != access_key_id {
            return Err(TokenError::Malformed);
        }
        if now >= session.expires_at {
            return Err(TokenError::Expired {
                expired_at: session.expires_at,
            });
        }
        Ok(RoleSession {
            secret_access_key: self.derive_secret(payload),
            ..session
        })
    }

    /// 40 characters of standard base64 (as AWS secrets look) of the labelled HMAC.
    fn derive_secret(&self, payload: &str) -> String {
        let mut secret = STANDARD.encode(self.tag(SECRET_LABEL, payload).finalize().into_bytes());
        secret.truncate(40);
        secret
    }

    fn tag(&self, label: &[u8], payload: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(label);
        mac.update(payload.as_bytes());
        mac
    }
}

/// `v2.<key id>.<account>.<expiry>.<worker>.<role>`, strictly; the secret is left empty.
fn parse(payload: &str) -> Option<RoleSession> {
    let mut fields = payload.split('.');
    let (version, key_id, account, expiry, worker, role) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let key_ok = key_id.len() == 20
        && key_id.starts_with(ACCESS_KEY_PREFIX)
        && key_id[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let digits =
        !expiry.is_empty() && expiry.len() <= 20 && expiry.bytes().all(|b| b.is_ascii_digit());
    let valid = fields.next().is_none()
        && version == VERSION
        && key_ok
        && names::check_account(account).is_ok()
        && names::check_artifact(worker).is_ok()
        && digits;
    valid.then_some(())?;
    let role = String::from_utf8(URL_SAFE_NO_PAD.decode(role).ok()?).ok()?;
    Some(RoleSession {
        access_key_id: key_id.to_owned(),
        account_id: account.to_owned(),
        role_arn: role,
        worker: worker.to_owned(),
        expires_at: expiry.parse().ok()?,
        secret_access_key: String::new(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000;
    const ACCOUNT: &str = "123456789012";
    const ROLE: &str = "arn:aws:iam::123456789012:role/service-role/my.role";
    const W: &str = "w-0123456789abcdef";

    fn issuer() -> RoleIssuer {
        RoleIssuer::new(&[7; 32])
    }

    #[test]
    fn mints_credentials_shaped_like_aws_and_verifies_them() {
        let issuer = issuer();
        let creds = issuer.credentials(ACCOUNT, ROLE, W, NOW).unwrap();
        assert_eq!(creds.access_key_id.len(), 20);
        assert!(creds.access_key_id.starts_with("ASIA"));
        assert_eq!(creds.secret_access_key.len(), 40);
        assert_eq!(creds.expires_at, NOW + 3600);
        assert!(creds
            .session_token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert!(!format!("{creds:?}").contains(&creds.secret_access_key));

        let session = issuer
            .verify(&creds.access_key_id, &creds.session_token, NOW + 10)
            .unwrap();
        assert_eq!(session.account_id, ACCOUNT);
        assert_eq!(session.role_arn, ROLE);
        assert_eq!(session.worker, W);
        assert_eq!(session.access_key_id, creds.access_key_id);
        assert_eq!(session.expires_at, creds.expires_at);
        assert_eq!(session.secret_access_key, creds.secret_access_key);
        assert!(!format!("{session:?}").contains(&creds.secret_access_key));

        // Another issuer with the same secret (another control instance) agrees.
        let twin = RoleIssuer::new(&[7; 32]);
        assert_eq!(
            twin.verify(&creds.access_key_id, &creds.session_token, NOW),
            Ok(session)
        );
    }

    #[test]
    fn caches_per_role_until_five_minutes_before_expiry() {
        let mut issuer = issuer();
        issuer.set_lifetime(Duration::from_secs(1800));
        let first = issuer.credentials(ACCOUNT, ROLE, W, NOW).unwrap();
        assert_eq!(first.expires_at, NOW + 1800);
        assert_eq!(
            issuer.credentials(ACCOUNT, ROLE, W, NOW + 60).unwrap(),
            first
        );
        assert_eq!(
            issuer
                .credentials(ACCOUNT, ROLE, W, NOW + 1800 - 301)
                .unwrap(),
            first
        );
        let other_role = issuer.credentials(ACCOUNT, "arn:aws:iam::123456789012:role/b", W, NOW);
        assert_ne!(other_role.unwrap().access_key_id, first.access_key_id);
        let other_account = issuer.credentials("210987654321", ROLE, W, NOW).unwrap();
        assert_ne!(other_account.access_key_id, first.access_key_id);
        let other_worker = issuer.credentials(ACCOUNT, ROLE, "w-1", NOW).unwrap();
        assert_ne!(other_worker.access_key_id, first.access_key_id);

        let renewed = issuer
            .credentials(ACCOUNT, ROLE, W, NOW + 1800 - 300)
            .unwrap();
        assert_ne!(renewed.access_key_id, first.access_key_id);
        assert_ne!(renewed.secret_access_key, first.secret_access_key);
        assert_eq!(renewed.expires_at, NOW + 1800 - 300 + 1800);
        assert_eq!(
            issuer.credentials(ACCOUNT, ROLE, W, NOW + 1800).unwrap(),
            renewed
        );
    }

    #[test]
    fn refuses_expired_tokens_and_other_keys() {
        let issuer = issuer();
        let creds = issuer.credentials(ACCOUNT, ROLE, W, NOW).unwrap();
        let verify = |now| issuer.verify(&creds.access_key_id, &creds.session_token, now);
        assert!(verify(NOW + 3599).is_ok());
        for now in [NOW + 3600, NOW + 3601, u64::MAX] {
            assert_eq!(
                verify(now),
                Err(TokenError::Expired {
                    expired_at: NOW + 3600
                })
            );
        }
        // A genuine token presented with another key id.
        let other = issuer.credentials(ACCOUNT, "arn:x", W, NOW).unwrap();
        assert_eq!(
            issuer.verify(&other.access_key_id, &creds.session_token, NOW),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn refuses_forged_and_malformed_tokens() {
        let issuer = issuer();
        let creds = issuer.credentials(ACCOUNT, ROLE, W, NOW).unwrap();
        let key = &creds.access_key_id;
        // Another secret.
        assert_eq!(
            RoleIssuer::new(&[8; 32]).verify(key, &creds.session_token, NOW),
            Err(TokenError::BadSignature)
        );
        // Each field changed under the original signature.
        let (payload, signature) = creds.session_token.rsplit_once('.').unwrap();
        let fields: Vec<&str> = payload.split('.').collect();
        let admin_role = URL_SAFE_NO_PAD.encode("arn:aws:iam::123456789012:role/admin");
        for (index, value) in [
            (2, "210987654321"),
            (3, "99999999999"),
            (4, "w-1"),
            (5, admin_role.as_str()),
        ] {
            let mut changed = fields.clone();
            changed[index] = value;
            let forged = format!("{}.{signature}", changed.join("."));
            assert_eq!(
                issuer.verify(key, &forged, NOW),
                Err(TokenError::BadSignature),
                "{forged}"
            );
        }
        let mut flipped = creds.session_token.clone().into_bytes();
        let last = flipped.len() - 2;
        flipped[last] = if flipped[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(
            issuer.verify(key, &String::from_utf8(flipped).unwrap(), NOW),
            Err(TokenError::BadSignature)
        );
        for bad in [
            String::new(),
            "v2".into(),
            creds.session_token.replacen("v2", "v1", 1),
            format!("{payload}.x.{signature}"),
            format!("{}.{signature}", fields[..5].join(".")),
            format!("{}..{}.{signature}", fields[..4].join("."), fields[5]),
            format!("{}!", creds.session_token),
            creds.session_token[..creds.session_token.len() - 3].to_owned(),
            format!("{}{}", creds.session_token, "A".repeat(MAX_TOKEN)),
        ] {
            assert_eq!(
                issuer.verify(key, &bad, NOW),
                Err(TokenError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn refuses_invalid_accounts_and_roles() {
        let issuer = issuer();
        for account in ["", "a.b", "../x"] {
            assert!(matches!(
                issuer.credentials(account, ROLE, W, NOW),
                Err(IssueError::InvalidAccount(_))
            ));
        }
        assert!(matches!(
            issuer.credentials(ACCOUNT, ROLE, "w.1", NOW),
            Err(IssueError::InvalidWorker(_))
        ));
        for role in ["", "has space", &"r".repeat(MAX_ROLE + 1)] {
            assert!(matches!(
                issuer.credentials(ACCOUNT, role, W, NOW),
                Err(IssueError::InvalidRole(_))
            ));
        }
    }

    #[test]
    fn keeps_its_secret_in_the_data_directory() {
        use std::os::unix::fs::PermissionsExt;
        let data = tempfile::tempdir().unwrap();
        let first = RoleIssuer::load_or_create(data.path()).unwrap();
        let creds = first.credentials(ACCOUNT, ROLE, W, NOW).unwrap();
        let again = RoleIssuer::load_or_create(data.path()).unwrap();
        assert!(again
            .verify(&creds.access_key_id, &creds.session_token, NOW)
            .is_ok());
        let path = data.path().join("keys").join(SECRET_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let other = tempfile::tempdir().unwrap();
        let other = RoleIssuer::load_or_create(other.path()).unwrap();
        assert_eq!(
            other.verify(&creds.access_key_id, &creds.session_token, NOW),
            Err(TokenError::BadSignature)
        );
    }
}
