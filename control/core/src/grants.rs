//! Artifact grants: what a worker presents to fetch one artifact's code, for a short time.
//! The control plane issues one when it asks a worker to create an environment; it names
//! that worker, so no other worker (and no one on the public API) can use it; the worker
//! cannot use it for any other artifact, and it stops working at its expiry. A grant for a
//! `Code.Location` URL names no worker ([`Holder::Url`]) and works only on that URL.
//!
//! A grant is a token of six dot-separated fields, all URL-safe:
//!
//! ```text
//! v2.<account>.<artifact id>.<holder>.<expiry>.<signature>
//! ```
//!
//! - `v2`: the format;
//! - account and artifact id as stored (`[A-Za-z0-9_-]{1,64}`, see [`crate::names`]);
//! - holder: the worker id it was issued to, or `-` for a download URL;
//! - expiry: Unix seconds, decimal; the grant is valid while `now < expiry`;
//! - signature: HMAC-SHA256 under the issuer's secret of everything before the last dot,
//!   URL-safe base64 without padding (43 characters).
//!
//! Fields are plain text on purpose: a grant tells whoever holds it what it is for, and
//! secrecy comes from TLS, not from the token. The secret is 32 random bytes in
//! `DIR/keys/grant.key` (base64, mode 0600), made on first use. Verification checks the
//! signature (in constant time, by the `hmac` crate) before it looks at anything else.

use std::fmt;
use std::path::Path;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

use crate::keys::{self, KeyError};
use crate::names::{self, InvalidName};

/// The secret's file name inside `DIR/keys/`.
pub const SECRET_FILE: &str = "grant.key";

/// The token format this module writes and reads.
const VERSION: &str = "v2";

/// How a grant for a download URL names its holder.
const URL_HOLDER: &str = "-";

/// Longer tokens are refused before any work: 2 + 64 + 64 + 64 + 20 + 43 and five dots fit.
const MAX_TOKEN: usize = 320;

/// Who may use a grant.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Holder<'a> {
    /// Whoever has the `Code.Location` URL, on the public API only.
    Url,
    /// Worker `id` only, on the fleet listener.
    Worker(&'a str),
}

/// What a valid token grants.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Grant {
    pub account: String,
    pub artifact_id: String,
    /// The worker it was issued to; `None` for a download URL.
    pub worker: Option<String>,
    /// Unix seconds; valid while the time is before it.
    pub expires_at: u64,
}

/// Why a token was refused. A worker gets the same answer for all of them in practice
/// (403); the variants are for logs and tests.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("malformed grant")]
    Malformed,
    #[error("grant signature does not verify")]
    BadSignature,
    #[error("grant is for artifact {granted}, not {requested}")]
    WrongArtifact { granted: String, requested: String },
    #[error("grant was issued to someone else")]
    WrongHolder,
    #[error("grant expired at {expired_at}")]
    Expired { expired_at: u64 },
}

/// Issues and verifies grants with one secret.
#[derive(Clone)]
pub struct GrantIssuer {
    mac: Hmac<Sha256>,
}

impl fmt::Debug for GrantIssuer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrantIssuer").finish_non_exhaustive()
    }
}

impl GrantIssuer {
    /// An issuer signing with `secret`.
    pub fn new(secret: &[u8; 32]) -> GrantIssuer {
        GrantIssuer {
            mac: <Hmac<Sha256> as KeyInit>::new_from_slice(secret)
                .expect("HMAC takes keys of any length"),
        }
    }

    /// The issuer of `data_dir`, whose secret is made on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<GrantIssuer, KeyError> {
        Ok(GrantIssuer::new(&*keys::load_or_create_secret(
            data_dir,
            SECRET_FILE,
        )?))
    }

    /// A token granting `holder` `account`'s artifact `artifact_id` until `expires_at`
    /// (Unix seconds).
    pub fn issue(
        &self,
        account: &str,
        artifact_id: &str,
        holder: Holder<'_>,
        expires_at: u64,
    ) -> Result<String, InvalidName> {
        names::check_account(account)?;
        names::check_artifact(artifact_id)?;
        let holder = match holder {
            Holder::Url => URL_HOLDER,
            Holder::Worker(id) => {
                names::check_artifact(id)?;
                id
            }
        };
        let payload = format!("{VERSION}.{account}.{artifact_id}.{holder}.{expires_at}");
        let signature = URL_SAFE_NO_PAD.encode(self.sign(&payload).finalize().into_bytes());
        Ok(format!("{payload}.{signature}"))
    }

    /// Checks that `token` is one of this issuer's, for `artifact_id`, issued to `holder`,
    /// and not expired at `now` (Unix seconds).
    pub fn verify(
        &self,
        token: &str,
        artifact_id: &str,
        holder: Holder<'_>,
        now: u64,
    ) -> Result<Grant, GrantError> {
        if token.len() > MAX_TOKEN {
            return Err(GrantError::Malformed);
        }
        let (payload, signature) = token.rsplit_once('.').ok_or(GrantError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .ok()
            .filter(|s| s.len() == 32)
            .ok_or(GrantError::Malformed)?;
        let grant = parse(payload).ok_or(GrantError::Malformed)?;
        self.sign(payload)
            .verify_slice(&signature)
            .map_err(|_| GrantError::BadSignature)?;
        if grant.artifact_id != artifact_id {
            return Err(GrantError::WrongArtifact {
                granted: grant.artifact_id,
                requested: artifact_id.to_owned(),
            });
        }
        let issued_to = match holder {
            Holder::Url => None,
            Holder::Worker(id) => Some(id),
        };
        if grant.worker.as_deref() != issued_to {
            return Err(GrantError::WrongHolder);
        }
        if now >= grant.expires_at {
            return Err(GrantError::Expired {
                expired_at: grant.expires_at,
            });
        }
        Ok(grant)
    }

    fn sign(&self, payload: &str) -> Hmac<Sha256> {
        let mut mac = self.mac.clone();
        mac.update(payload.as_bytes());
        mac
    }
}

/// `v2.<account>.<artifact id>.<holder>.<expiry>`, strictly.
fn parse(payload: &str) -> Option<Grant> {
    let mut fields = payload.split('.');
    let (version, account, artifact_id, holder, expiry) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next()?,
    );
    let worker = match holder {
        URL_HOLDER => None,
        id => Some(id.to_owned()),
    };
    let digits =
        !expiry.is_empty() && expiry.len() <= 20 && expiry.bytes().all(|b| b.is_ascii_digit());
    let valid = fields.next().is_none()
        && version == VERSION
        && names::check_account(account).is_ok()
        && names::check_artifact(artifact_id).is_ok()
        && (holder == URL_HOLDER || names::check_artifact(holder).is_ok())
        && digits;
    valid.then_some(())?;
    Some(Grant {
        account: account.to_owned(),
        artifact_id: artifact_id.to_owned(),
        worker,
        expires_at: expiry.parse().ok()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_750_000_000;
    const W: Holder<'static> = Holder::Worker("w-0123");

    fn issuer() -> GrantIssuer {
        GrantIssuer::new(&[42; 32])
    }

    #[test]
    fn round_trips_and_documents_its_format() {
        let token = issuer()
            .issue("111122223333", "fn-a_1", W, NOW + 60)
            .unwrap();
        let (payload, signature) = token.rsplit_once('.').unwrap();
        assert_eq!(
            payload,
            format!("v2.111122223333.fn-a_1.w-0123.{}", NOW + 60)
        );
        assert_eq!(signature.len(), 43);
        assert!(token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)));
        assert_eq!(
            issuer().verify(&token, "fn-a_1", W, NOW),
            Ok(Grant {
                account: "111122223333".into(),
                artifact_id: "fn-a_1".into(),
                worker: Some("w-0123".into()),
                expires_at: NOW + 60,
            })
        );
    }

    #[test]
    fn refuses_other_artifacts_and_expired_grants() {
        let token = issuer().issue("acct", "a", W, NOW + 60).unwrap();
        assert_eq!(
            issuer().verify(&token, "b", W, NOW),
            Err(GrantError::WrongArtifact {
                granted: "a".into(),
                requested: "b".into()
            })
        );
        assert!(issuer().verify(&token, "a", W, NOW + 59).is_ok());
        for now in [NOW + 60, NOW + 61, u64::MAX] {
            assert_eq!(
                issuer().verify(&token, "a", W, now),
                Err(GrantError::Expired {
                    expired_at: NOW + 60
                })
            );
        }
        assert!(issuer().issue("acct", "../x", W, NOW).is_err());
        assert!(issuer()
            .issue("acct", "x", Holder::Worker("w.1"), NOW)
            .is_err());
        assert!(issuer().issue("a.b", "x", W, NOW).is_err());
    }

    #[test]
    fn works_for_its_holder_only() {
        let token = issuer().issue("acct", "a", W, NOW + 60).unwrap();
        for other in [Holder::Worker("w-4567"), Holder::Url] {
            assert_eq!(
                issuer().verify(&token, "a", other, NOW),
                Err(GrantError::WrongHolder)
            );
        }
        let url = issuer().issue("acct", "a", Holder::Url, NOW + 60).unwrap();
        assert!(url.contains(".a.-."), "{url}");
        assert_eq!(
            issuer().verify(&url, "a", Holder::Url, NOW).unwrap().worker,
            None
        );
        assert_eq!(
            issuer().verify(&url, "a", W, NOW),
            Err(GrantError::WrongHolder)
        );
    }

    #[test]
    fn refuses_forgeries() {
        let token = issuer().issue("acct", "a", W, NOW + 60).unwrap();
        // Another issuer's secret.
        let other = GrantIssuer::new(&[43; 32]);
        assert_eq!(
            other.verify(&token, "a", W, NOW),
            Err(GrantError::BadSignature)
        );
        // Any field changed under the original signature: a longer expiry, another account,
        // artifact or holder.
        let (payload, signature) = token.rsplit_once('.').unwrap();
        for changed in [
            payload.replace(&(NOW + 60).to_string(), &(NOW + 6000).to_string()),
            payload.replace("acct", "acc2"),
            payload.replace(".a.", ".b."),
            payload.replace("w-0123", "w-4567"),
        ] {
            assert_ne!(changed, payload);
            let forged = format!("{changed}.{signature}");
            let artifact = changed.split('.').nth(2).unwrap();
            let holder = Holder::Worker(changed.split('.').nth(3).unwrap());
            assert_eq!(
                issuer().verify(&forged, artifact, holder, NOW),
                Err(GrantError::BadSignature),
                "{forged}"
            );
        }
        // A changed signature character.
        let mut bytes = token.clone().into_bytes();
        let last = bytes.len() - 2;
        bytes[last] = if bytes[last] == b'A' { b'B' } else { b'A' };
        let forged = String::from_utf8(bytes).unwrap();
        assert_eq!(
            issuer().verify(&forged, "a", W, NOW),
            Err(GrantError::BadSignature)
        );
    }

    #[test]
    fn refuses_malformed_tokens() {
        let token = issuer().issue("acct", "a", W, NOW + 60).unwrap();
        let signature = token.rsplit_once('.').unwrap().1;
        let long = format!("v2.acct.a.w-0123.{}.{signature}", "1".repeat(300));
        let h = "w-0123";
        for bad in [
            "",
            "v2",
            "garbage",
            &token.replacen("v2", "v1", 1),
            &token.replacen(".a.", ".a.b.", 1),
            &format!("v2.acct.a.{signature}"),
            &format!("v2.acct.a.{h}.{signature}"),
            &format!("v1.acct.a.{}.{signature}", NOW + 60),
            &format!("v2.acct.a.{h}.-5.{signature}"),
            &format!("v2.acct.a.{h}.+5.{signature}"),
            &format!("v2.acct.a.{h}..{signature}"),
            &format!("v2.acct.a..{}.{signature}", NOW + 60),
            &format!("v2.acct.a.{h}.{}.{signature}", "9".repeat(21)),
            &format!("v2.acct.a.{h}.99999999999999999999.{signature}"),
            &format!("{token}="),
            &token[..token.len() - 4],
            &format!("{token}AAAA"),
            &format!("{token}!"),
            &long,
        ] {
            assert_eq!(
                issuer().verify(bad, "a", W, NOW),
                Err(GrantError::Malformed),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keeps_its_secret_in_the_data_directory() {
        use std::os::unix::fs::PermissionsExt;
        let data = tempfile::tempdir().unwrap();
        let first = GrantIssuer::load_or_create(data.path()).unwrap();
        let token = first.issue("acct", "a", W, NOW + 60).unwrap();
        let again = GrantIssuer::load_or_create(data.path()).unwrap();
        assert!(again.verify(&token, "a", W, NOW).is_ok());
        let path = data.path().join("keys").join(SECRET_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        // Another data directory, another secret.
        let other = tempfile::tempdir().unwrap();
        let other = GrantIssuer::load_or_create(other.path()).unwrap();
        assert_eq!(
            other.verify(&token, "a", W, NOW),
            Err(GrantError::BadSignature)
        );
        // A damaged secret file is an error, not a new secret.
        std::fs::write(&path, "short").unwrap();
        let err = GrantIssuer::load_or_create(data.path()).unwrap_err();
        assert!(err.to_string().contains("not 32 bytes"), "{err}");
    }
}
