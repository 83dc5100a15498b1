//! Join tokens: what a new worker registers with. The operator creates them
//! (`ember worker token create`), each expiring, good for a bounded number of
//! registrations, revocable (`ember worker revoke`), and with a capacity ceiling: a worker
//! claiming more vCPUs, memory or environments than its token allows is refused, so that a
//! stolen token cannot pull the fleet's invocations towards a rogue worker by its claims.
//!
//! A token is `ID.SECRET`: the id (`jt-` and 8 hex digits) finds its row, the secret (64
//! hex digits) proves it; control keeps only the secret's SHA-256 and compares in constant
//! time. The bootstrap token of `DIR/worker-token` ([`super::token`]) stays valid as the
//! join token `bootstrap` (no expiry, any number of uses, the ceiling `ember-control
//! serve` is given), so existing workers and images keep joining; it can be revoked like
//! any other, and stays revoked until the file is replaced.

use std::time::Duration;

use ember_fleet::messages::Capacity;
use sha2::{Digest, Sha256};
use sqlx::AnyPool;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use super::token::BootstrapToken;
use ember_core::random;
use ember_store::join_tokens::{self, JoinToken};

/// The id under which the bootstrap token of `DIR/worker-token` is kept.
pub const BOOTSTRAP_ID: &str = "bootstrap";

/// The ceiling of tokens created without one, and of the bootstrap token unless
/// `ember-control serve` says otherwise: room for one large machine, not for a claim
/// that dwarfs the fleet.
pub const DEFAULT_CEILING: Capacity = Capacity {
    vcpus: 256,
    memory_mib: 2 << 20,
    max_environments: 1024,
};

/// What a new token allows.
#[derive(Clone, Debug)]
pub struct Limits {
    /// For people: what the token is for.
    pub description: String,
    /// `None`: never expires.
    pub lifetime: Option<Duration>,
    /// `None`: any number of registrations.
    pub max_uses: Option<u64>,
    pub ceiling: Capacity,
}

/// A token just created: the secret to hand over (shown once) and what is stored.
pub struct Created {
    pub token: Zeroizing<String>,
    pub stored: JoinToken,
}

/// Why a registration's token was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    /// Unknown, malformed or a wrong secret: nothing more is told.
    #[error("Invalid join token")]
    Invalid,
    #[error("Join token {id} is {reason}")]
    Unusable { id: String, reason: &'static str },
    #[error("The worker claims more than its join token allows: {0}")]
    OverCeiling(String),
    #[error("registry: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Why a token could not be created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    #[error("no randomness: {0}")]
    Random(#[from] std::io::Error),
    #[error("registry: {0}")]
    Sql(#[from] sqlx::Error),
}

/// Creates a token with `limits` at `now` (Unix seconds).
pub async fn create(pool: &AnyPool, limits: Limits, now: u64) -> Result<Created, CreateError> {
    let id = format!("jt-{}", random::hex(&random::bytes::<4>()?));
    let secret = Zeroizing::new(random::hex(&*random::key()?));
    let stored = JoinToken {
        id: id.clone(),
        secret_sha256: digest(&secret),
        description: limits.description,
        created_at: now,
        expires_at: limits.lifetime.map(|d| now.saturating_add(d.as_secs())),
        max_uses: limits.max_uses,
        uses: 0,
        ceiling: limits.ceiling,
        revoked_at: None,
    };
    join_tokens::insert(pool, &stored).await?;
    Ok(Created {
        token: Zeroizing::new(format!("{id}.{}", *secret)),
        stored,
    })
}

/// Records the bootstrap token of `DIR/worker-token` as the join token [`BOOTSTRAP_ID`]
/// with `ceiling`.
pub async fn record_bootstrap(
    pool: &AnyPool,
    bootstrap: &BootstrapToken,
    ceiling: &Capacity,
    now: u64,
) -> Result<(), sqlx::Error> {
    let stored = JoinToken {
        id: BOOTSTRAP_ID.to_owned(),
        secret_sha256: digest(bootstrap.secret()),
        description: "DIR/worker-token".to_owned(),
        created_at: now,
        expires_at: None,
        max_uses: None,
        uses: 0,
        ceiling: ceiling.clone(),
        revoked_at: None,
    };
    join_tokens::put_bootstrap(pool, &stored).await
}

/// Admits a registration presenting `presented` and claiming `claimed` at `now`: spends
/// one use of the token and returns its id.
pub async fn admit(
    pool: &AnyPool,
    presented: &str,
    claimed: &Capacity,
    now: u64,
) -> Result<String, Refused> {
    let presented = presented.trim();
    let (id, secret) = presented
        .split_once('.')
        .unwrap_or((BOOTSTRAP_ID, presented));
    let token = join_tokens::get(pool, id).await?.ok_or(Refused::Invalid)?;
    let proven: bool = digest(secret)
        .as_bytes()
        .ct_eq(token.secret_sha256.as_bytes())
        .into();
    if !proven {
        return Err(Refused::Invalid);
    }
    let unusable = |reason| Refused::Unusable {
        id: token.id.clone(),
        reason,
    };
    if let Some(reason) = token.unusable(now) {
        return Err(unusable(reason));
    }
    over_ceiling(claimed, &token.ceiling).map_or(Ok(()), |over| Err(Refused::OverCeiling(over)))?;
    // Spent only now, and only if still usable: a racing registration may have taken the
    // last use.
    if !join_tokens::spend(pool, &token.id, now).await? {
        return Err(unusable("used up"));
    }
    Ok(token.id)
}

/// What of `claimed` exceeds `ceiling`, said plainly, if anything does.
fn over_ceiling(claimed: &Capacity, ceiling: &Capacity) -> Option<String> {
    let mut over = Vec::new();
    if claimed.vcpus > ceiling.vcpus {
        over.push(format!(
            "{} vCPUs (at most {})",
            claimed.vcpus, ceiling.vcpus
        ));
    }
    if claimed.memory_mib > ceiling.memory_mib {
        over.push(format!(
            "{} MiB of memory (at most {})",
            claimed.memory_mib, ceiling.memory_mib
        ));
    }
    if claimed.max_environments > ceiling.max_environments {
        over.push(format!(
            "{} environments (at most {})",
            claimed.max_environments, ceiling.max_environments
        ));
    }
    (!over.is_empty()).then(|| over.join(", "))
}

/// SHA-256 of a secret, hex: secrets are 256 random bits, so no slow hash is needed.
fn digest(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_store::Registry;

    fn limits(max_uses: Option<u64>, lifetime: Option<Duration>) -> Limits {
        Limits {
            description: "test".into(),
            lifetime,
            max_uses,
            ceiling: Capacity {
                vcpus: 8,
                memory_mib: 8192,
                max_environments: 64,
            },
        }
    }

    fn claim(vcpus: u32) -> Capacity {
        Capacity {
            vcpus,
            memory_mib: 1024,
            max_environments: 8,
        }
    }

    #[tokio::test]
    async fn tokens_admit_within_their_limits_only() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_sqlite(dir.path()).await.unwrap();
        let pool = registry.pool();
        let once = create(pool, limits(Some(1), None), 100).await.unwrap();
        let (id, secret) = once.token.split_once('.').unwrap();
        assert!(id.starts_with("jt-") && id.len() == 11, "{id}");
        assert_eq!(secret.len(), 64);

        // A wrong secret, an unknown id and garbage say nothing more.
        for wrong in [
            format!("{id}.{}", "0".repeat(64)),
            format!("jt-00000000.{secret}"),
            "garbage".to_owned(),
            String::new(),
        ] {
            let refused = admit(pool, &wrong, &claim(1), 100).await.unwrap_err();
            assert!(matches!(refused, Refused::Invalid), "{wrong}: {refused}");
        }
        // Over the ceiling: refused, and no use spent.
        let refused = admit(pool, &once.token, &claim(u32::MAX), 100)
            .await
            .unwrap_err();
        assert_eq!(
            refused.to_string(),
            "The worker claims more than its join token allows: 4294967295 vCPUs (at most 8)"
        );
        assert_eq!(admit(pool, &once.token, &claim(8), 100).await.unwrap(), id);
        let refused = admit(pool, &once.token, &claim(1), 100).await.unwrap_err();
        assert_eq!(refused.to_string(), format!("Join token {id} is used up"));

        // Expiring.
        let hour = create(pool, limits(None, Some(Duration::from_secs(3600))), 100)
            .await
            .unwrap();
        assert!(admit(pool, &hour.token, &claim(1), 3699).await.is_ok());
        let refused = admit(pool, &hour.token, &claim(1), 3700).await.unwrap_err();
        assert!(refused.to_string().ends_with("is expired"), "{refused}");

        // Revoked.
        let any = create(pool, limits(None, None), 100).await.unwrap();
        assert!(admit(pool, &any.token, &claim(1), 100).await.is_ok());
        join_tokens::revoke(pool, &any.stored.id, 101)
            .await
            .unwrap();
        let refused = admit(pool, &any.token, &claim(1), 102).await.unwrap_err();
        assert!(refused.to_string().ends_with("is revoked"), "{refused}");
    }

    #[tokio::test]
    async fn the_bootstrap_file_is_a_join_token_with_the_operators_ceiling() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_sqlite(dir.path()).await.unwrap();
        let pool = registry.pool();
        let bootstrap = BootstrapToken::load_or_create(dir.path()).unwrap();
        let file =
            std::fs::read_to_string(dir.path().join(super::super::token::TOKEN_FILE)).unwrap();
        let ceiling = limits(None, None).ceiling;
        record_bootstrap(pool, &bootstrap, &ceiling, 1)
            .await
            .unwrap();
        for _ in 0..3 {
            assert_eq!(
                admit(pool, &file, &claim(8), 2).await.unwrap(),
                BOOTSTRAP_ID
            );
        }
        assert!(matches!(
            admit(pool, &file, &claim(9), 2).await,
            Err(Refused::OverCeiling(_))
        ));
        join_tokens::revoke(pool, BOOTSTRAP_ID, 3).await.unwrap();
        record_bootstrap(pool, &bootstrap, &ceiling, 4)
            .await
            .unwrap();
        assert!(matches!(
            admit(pool, &file, &claim(1), 5).await,
            Err(Refused::Unusable { .. })
        ));
    }
}
