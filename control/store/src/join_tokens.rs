//! Join tokens in SQL (`migrations/0005_join_tokens.sql`): what a new worker registers
//! with, each limited by the operator (expiry, uses, a capacity ceiling) and revocable.
//! The secret itself is never stored, only its SHA-256; checking a presented secret
//! against it is the service's job. A registration spends one use with [`spend`], a single
//! conditional `UPDATE`, so two workers racing for a token's last use cannot both win.

use ember_fleet::messages::Capacity;
use sqlx::AnyPool;

/// One join token as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinToken {
    pub id: String,
    /// SHA-256 of the secret, hex.
    pub secret_sha256: String,
    pub description: String,
    pub created_at: u64,
    /// Unix seconds; `None`: never expires.
    pub expires_at: Option<u64>,
    /// `None`: any number of registrations.
    pub max_uses: Option<u64>,
    pub uses: u64,
    /// The most a worker joining with it may claim.
    pub ceiling: Capacity,
    pub revoked_at: Option<u64>,
}

impl JoinToken {
    /// Why the token admits no registration at `now` (Unix seconds), if it does not.
    pub fn unusable(&self, now: u64) -> Option<&'static str> {
        if self.revoked_at.is_some() {
            Some("revoked")
        } else if self.expires_at.is_some_and(|at| now >= at) {
            Some("expired")
        } else if self.max_uses.is_some_and(|max| self.uses >= max) {
            Some("used up")
        } else {
            None
        }
    }
}

type Row = (
    String,
    String,
    String,
    i64,
    Option<i64>,
    Option<i64>,
    i64,
    i64,
    i64,
    i64,
    Option<i64>,
);

const COLUMNS: &str = "id, secret_sha256, description, created_at, expires_at, max_uses, uses, \
     max_vcpus, max_memory_mib, max_environments, revoked_at";

/// Records a new token.
pub async fn insert(pool: &AnyPool, token: &JoinToken) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO join_tokens ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&token.id)
    .bind(&token.secret_sha256)
    .bind(&token.description)
    .bind(clamp(token.created_at))
    .bind(token.expires_at.map(clamp))
    .bind(token.max_uses.map(clamp))
    .bind(clamp(token.uses))
    .bind(i64::from(token.ceiling.vcpus))
    .bind(clamp(token.ceiling.memory_mib))
    .bind(i64::from(token.ceiling.max_environments))
    .bind(token.revoked_at.map(clamp))
    .execute(pool)
    .await?;
    Ok(())
}

/// Token `id`, if there is one.
pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<JoinToken>, sqlx::Error> {
    let row: Option<Row> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM join_tokens WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?;
    Ok(row.map(from_row))
}

/// Every token, oldest first.
pub async fn list(pool: &AnyPool) -> Result<Vec<JoinToken>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM join_tokens ORDER BY created_at, id"
    ))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(from_row).collect())
}

/// Spends one use of token `id` at `now`, unless it is revoked, expired or used up;
/// whether it was spent.
pub async fn spend(pool: &AnyPool, id: &str, now: u64) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE join_tokens SET uses = uses + 1 WHERE id = $1 AND revoked_at IS NULL \
         AND (expires_at IS NULL OR expires_at > $2) AND (max_uses IS NULL OR uses < max_uses)",
    )
    .bind(id)
    .bind(clamp(now))
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Revokes token `id` at `now`; whether it was there and not yet revoked.
pub async fn revoke(pool: &AnyPool, id: &str, now: u64) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE join_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
            .bind(clamp(now))
            .bind(id)
            .execute(pool)
            .await?;
    Ok(done.rows_affected() == 1)
}

/// Makes `token` the one stored under its id when its secret differs from the stored
/// one's (a new secret starts afresh: unrevoked, unused); otherwise only its ceiling is
/// updated, and a revocation stands. For the bootstrap token, recorded at every start.
pub async fn put_bootstrap(pool: &AnyPool, token: &JoinToken) -> Result<(), sqlx::Error> {
    match get(pool, &token.id).await? {
        Some(stored) if stored.secret_sha256 == token.secret_sha256 => {
            sqlx::query(
                "UPDATE join_tokens SET max_vcpus = $1, max_memory_mib = $2, \
                 max_environments = $3 WHERE id = $4",
            )
            .bind(i64::from(token.ceiling.vcpus))
            .bind(clamp(token.ceiling.memory_mib))
            .bind(i64::from(token.ceiling.max_environments))
            .bind(&token.id)
            .execute(pool)
            .await?;
            Ok(())
        }
        Some(_) => {
            sqlx::query("DELETE FROM join_tokens WHERE id = $1")
                .bind(&token.id)
                .execute(pool)
                .await?;
            insert(pool, token).await
        }
        None => insert(pool, token).await,
    }
}

fn from_row(row: Row) -> JoinToken {
    let (
        id,
        secret_sha256,
        description,
        created_at,
        expires_at,
        max_uses,
        uses,
        vcpus,
        memory_mib,
        max_environments,
        revoked_at,
    ) = row;
    let number = |value: i64| u64::try_from(value).unwrap_or(0);
    let small = |value: i64| u32::try_from(value).unwrap_or(0);
    JoinToken {
        id,
        secret_sha256,
        description,
        created_at: number(created_at),
        expires_at: expires_at.map(number),
        max_uses: max_uses.map(number),
        uses: number(uses),
        ceiling: Capacity {
            vcpus: small(vcpus),
            memory_mib: number(memory_mib),
            max_environments: small(max_environments),
        },
        revoked_at: revoked_at.map(number),
    }
}

/// SQL integers are signed 64-bit.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    fn token(id: &str, hash: &str) -> JoinToken {
        JoinToken {
            id: id.into(),
            secret_sha256: hash.into(),
            description: "rack 4".into(),
            created_at: 100,
            expires_at: Some(200),
            max_uses: Some(2),
            uses: 0,
            ceiling: Capacity {
                vcpus: 8,
                memory_mib: 16_384,
                max_environments: 64,
            },
            revoked_at: None,
        }
    }

    #[tokio::test]
    async fn tokens_are_spent_expire_and_are_revoked() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_sqlite(dir.path()).await.unwrap();
        let pool = registry.pool();
        let stored = token("jt-1", "aa");
        insert(pool, &stored).await.unwrap();
        assert_eq!(get(pool, "jt-1").await.unwrap(), Some(stored.clone()));
        assert_eq!(get(pool, "jt-2").await.unwrap(), None);

        // Two uses, then no more.
        assert!(spend(pool, "jt-1", 150).await.unwrap());
        assert!(spend(pool, "jt-1", 150).await.unwrap());
        assert!(!spend(pool, "jt-1", 150).await.unwrap());
        let used = get(pool, "jt-1").await.unwrap().unwrap();
        assert_eq!((used.uses, used.unusable(150)), (2, Some("used up")));

        // Expired at its time.
        let mut later = token("jt-2", "bb");
        later.max_uses = None;
        insert(pool, &later).await.unwrap();
        assert!(spend(pool, "jt-2", 199).await.unwrap());
        assert!(!spend(pool, "jt-2", 200).await.unwrap());
        assert_eq!(later.unusable(200), Some("expired"));

        // Revoked, once.
        later.expires_at = None;
        later.id = "jt-3".into();
        insert(pool, &later).await.unwrap();
        assert!(revoke(pool, "jt-3", 300).await.unwrap());
        assert!(!revoke(pool, "jt-3", 301).await.unwrap());
        assert!(!spend(pool, "jt-3", 302).await.unwrap());
        let revoked = get(pool, "jt-3").await.unwrap().unwrap();
        assert_eq!(revoked.unusable(302), Some("revoked"));
        let ids: Vec<String> = list(pool)
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(ids, ["jt-1", "jt-2", "jt-3"]);
    }

    #[tokio::test]
    async fn the_bootstrap_token_stays_revoked_until_its_secret_changes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_sqlite(dir.path()).await.unwrap();
        let pool = registry.pool();
        let mut bootstrap = token("bootstrap", "aa");
        bootstrap.expires_at = None;
        bootstrap.max_uses = None;
        put_bootstrap(pool, &bootstrap).await.unwrap();
        assert!(revoke(pool, "bootstrap", 10).await.unwrap());
        // The next start, with other ceilings: still revoked, new ceilings.
        bootstrap.ceiling.vcpus = 16;
        put_bootstrap(pool, &bootstrap).await.unwrap();
        let stored = get(pool, "bootstrap").await.unwrap().unwrap();
        assert_eq!(stored.revoked_at, Some(10));
        assert_eq!(stored.ceiling.vcpus, 16);
        // A new secret (the operator removed DIR/worker-token): a fresh token.
        bootstrap.secret_sha256 = "bb".into();
        put_bootstrap(pool, &bootstrap).await.unwrap();
        assert_eq!(get(pool, "bootstrap").await.unwrap(), Some(bootstrap));
    }
}
