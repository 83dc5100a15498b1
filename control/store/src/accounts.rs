//! Accounts and their access keys: who may sign requests, and for which account.
//!
//! An account has a random 12-digit id (like an AWS account id, it appears in ARNs) and a
//! unique name chosen by the operator. An access key is an id (`AKIA` and 16 uppercase
//! letters or digits) and a 40-character secret, both drawn from the operating system's
//! generator. SigV4 verification needs the secret itself to recompute a signature, so it
//! cannot be hashed: it is sealed under the master keys ([`crate::sealing`]), and the
//! database alone does not reveal it.

use std::fmt;

use sqlx::AnyPool;

use ember_core::clock;
use ember_core::random;

use crate::sealing::{access_key_context, open_or_legacy, sql_error};
use crate::Registry;

/// The prefix of an account's own (long-term) access key ids, as AWS's.
pub const ACCESS_KEY_PREFIX: &str = "AKIA";

/// Longest account name; names become credential-file profile names and CLI arguments.
const MAX_NAME: usize = 64;

/// One account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Account {
    /// 12 digits.
    pub id: String,
    pub name: String,
    /// Unix seconds.
    pub created_at: i64,
}

/// One access key of an account.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessKey {
    pub key_id: String,
    pub account_id: String,
    pub secret: String,
}

impl fmt::Debug for AccessKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AccessKey")
            .field("key_id", &self.key_id)
            .field("account_id", &self.account_id)
            .finish_non_exhaustive()
    }
}

/// Why an account or key could not be created or read.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    #[error("an account named {0:?} exists already")]
    NameTaken(String),
    #[error("invalid account name {0:?}: expected 1 to {MAX_NAME} characters of A-Z, a-z, 0-9, '_' or '-'")]
    InvalidName(String),
    #[error("no account has id {0}")]
    NoSuchAccount(String),
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Creates an account named `name` with a fresh random id.
pub async fn create(pool: &AnyPool, name: &str) -> Result<Account, AccountError> {
    let valid = (1..=MAX_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if !valid {
        return Err(AccountError::InvalidName(name.to_owned()));
    }
    // A clash of random ids is a one-in-10^12 event; one more draw settles it.
    for _ in 0..3 {
        let account = Account {
            id: random::account_id()?,
            name: name.to_owned(),
            created_at: clock::now_unix() as i64,
        };
        let inserted =
            sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, $2, $3)")
                .bind(&account.id)
                .bind(&account.name)
                .bind(account.created_at)
                .execute(pool)
                .await;
        match inserted {
            Ok(_) => return Ok(account),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                if by_name(pool, name).await?.is_some() {
                    return Err(AccountError::NameTaken(name.to_owned()));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(AccountError::Io(std::io::Error::other(
        "could not draw an unused account id",
    )))
}

/// Adds a fresh access key to account `account_id`.
pub async fn create_key(registry: &Registry, account_id: &str) -> Result<AccessKey, AccountError> {
    let pool = registry.pool();
    if get(pool, account_id).await?.is_none() {
        return Err(AccountError::NoSuchAccount(account_id.to_owned()));
    }
    let key = AccessKey {
        key_id: random::access_key_id(ACCESS_KEY_PREFIX)?,
        account_id: account_id.to_owned(),
        secret: random::secret_access_key()?,
    };
    sqlx::query(
        "INSERT INTO access_keys (key_id, account_id, secret, created_at) VALUES ($1, $2, $3, $4)",
    )
    .bind(&key.key_id)
    .bind(&key.account_id)
    .bind(
        registry
            .sealer()?
            .seal(&access_key_context(&key.key_id), key.secret.as_bytes())
            .map_err(sql_error)?,
    )
    .bind(clock::now_unix() as i64)
    .execute(pool)
    .await?;
    Ok(key)
}

/// The access key `key_id`, if it exists.
pub async fn find_key(
    registry: &Registry,
    key_id: &str,
) -> Result<Option<AccessKey>, AccountError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT account_id, secret FROM access_keys WHERE key_id = $1")
            .bind(key_id)
            .fetch_optional(registry.pool())
            .await?;
    let Some((account_id, stored)) = row else {
        return Ok(None);
    };
    let secret = open_or_legacy(
        registry.sealer()?,
        &access_key_context(key_id),
        &stored,
        |bytes| {
            String::from_utf8(bytes.to_vec())
                .map_err(|e| sqlx::Error::Decode(format!("access key {key_id}: {e}").into()))
        },
    )?;
    Ok(Some(AccessKey {
        key_id: key_id.to_owned(),
        account_id,
        secret,
    }))
}

/// The account with id `id`.
pub async fn get(pool: &AnyPool, id: &str) -> Result<Option<Account>, AccountError> {
    one(pool, "id", id).await
}

/// The account named `name`.
pub async fn by_name(pool: &AnyPool, name: &str) -> Result<Option<Account>, AccountError> {
    one(pool, "name", name).await
}

/// Every account, by name.
pub async fn list(pool: &AnyPool) -> Result<Vec<Account>, AccountError> {
    let rows: Vec<(String, String, i64)> =
        sqlx::query_as("SELECT id, name, created_at FROM accounts ORDER BY name")
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(account).collect())
}

/// The account whose `column` (a fixed column name, never input) equals `value`.
async fn one(pool: &AnyPool, column: &str, value: &str) -> Result<Option<Account>, AccountError> {
    let row: Option<(String, String, i64)> = sqlx::query_as(&format!(
        "SELECT id, name, created_at FROM accounts WHERE {column} = $1"
    ))
    .bind(value)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(account))
}

fn account((id, name, created_at): (String, String, i64)) -> Account {
    Account {
        id,
        name,
        created_at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    #[tokio::test]
    async fn creates_accounts_and_keys_and_finds_them() {
        let (_dir, registry) = crate::fixtures::empty_registry().await;
        let pool = registry.pool();
        let admin = create(pool, "admin").await.unwrap();
        assert_eq!(admin.id.len(), 12);
        assert!(admin.id.bytes().all(|b| b.is_ascii_digit()));
        let other = create(pool, "other-1").await.unwrap();
        assert_ne!(admin.id, other.id);

        let key = create_key(&registry, &admin.id).await.unwrap();
        assert_eq!(key.key_id.len(), 20);
        assert!(key.key_id.starts_with("AKIA"));
        assert!(key.key_id[4..]
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit()));
        assert_eq!(key.secret.len(), 40);
        assert!(!format!("{key:?}").contains(&key.secret));
        assert_eq!(
            find_key(&registry, &key.key_id).await.unwrap(),
            Some(key.clone())
        );
        assert_eq!(
            find_key(&registry, "AKIA0000000000000000").await.unwrap(),
            None
        );
        let second = create_key(&registry, &admin.id).await.unwrap();
        assert_ne!(second.key_id, key.key_id);
        assert_ne!(second.secret, key.secret);

        assert_eq!(get(pool, &admin.id).await.unwrap(), Some(admin.clone()));
        assert_eq!(by_name(pool, "other-1").await.unwrap(), Some(other.clone()));
        assert_eq!(by_name(pool, "nobody").await.unwrap(), None);
        assert_eq!(list(pool).await.unwrap(), vec![admin, other]);
    }

    #[tokio::test]
    async fn secrets_are_sealed_in_the_database_and_old_plain_ones_get_sealed() {
        let (dir, registry) = crate::fixtures::empty_registry().await;
        let pool = registry.pool();
        let account = create(pool, "team").await.unwrap();
        let key = create_key(&registry, &account.id).await.unwrap();
        let stored = |id: String| async move {
            let (secret,): (String,) =
                sqlx::query_as("SELECT secret FROM access_keys WHERE key_id = $1")
                    .bind(id)
                    .fetch_one(pool)
                    .await
                    .unwrap();
            secret
        };
        let sealed = stored(key.key_id.clone()).await;
        assert!(sealed.starts_with(ember_core::sealed::PREFIX), "{sealed}");
        assert!(!sealed.contains(&key.secret));

        // A row from before secrets were sealed reads as it is, until resealing seals it.
        sqlx::query("INSERT INTO access_keys (key_id, account_id, secret, created_at) VALUES ('AKIAOLDOLDOLDOLDOLD0', $1, 'old-secret', 0)")
            .bind(&account.id)
            .execute(pool)
            .await
            .unwrap();
        let old = find_key(&registry, "AKIAOLDOLDOLDOLDOLD0")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(old.secret, "old-secret");
        let report = crate::sealing::reseal_all(&registry).await.unwrap();
        assert_eq!(report.resealed, 1);
        assert!(stored("AKIAOLDOLDOLDOLDOLD0".into())
            .await
            .starts_with(ember_core::sealed::PREFIX));
        assert_eq!(
            find_key(&registry, "AKIAOLDOLDOLDOLDOLD0").await.unwrap(),
            Some(old)
        );

        // A sealed secret copied onto another key does not open.
        sqlx::query("UPDATE access_keys SET secret = $1 WHERE key_id = 'AKIAOLDOLDOLDOLDOLD0'")
            .bind(&sealed)
            .execute(pool)
            .await
            .unwrap();
        assert!(find_key(&registry, "AKIAOLDOLDOLDOLDOLD0").await.is_err());

        // Without master keys, secrets are neither written nor read.
        let keyless = Registry::open_sqlite(dir.path()).await.unwrap();
        assert!(create_key(&keyless, &account.id).await.is_err());
        assert!(find_key(&keyless, &key.key_id).await.is_err());
    }

    #[tokio::test]
    async fn refuses_duplicate_and_invalid_names_and_unknown_accounts() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_sqlite(dir.path()).await.unwrap();
        let pool = registry.pool();
        create(pool, "team").await.unwrap();
        let err = create(pool, "team").await.unwrap_err();
        assert!(matches!(err, AccountError::NameTaken(_)), "{err}");
        assert_eq!(err.to_string(), "an account named \"team\" exists already");
        for bad in ["", "a b", "x/y", "ü", "[ember]", &"n".repeat(65)] {
            let err = create(pool, bad).await.unwrap_err();
            assert!(
                matches!(err, AccountError::InvalidName(_)),
                "{bad:?}: {err}"
            );
        }
        let err = create_key(&registry, "000000000000").await.unwrap_err();
        assert!(matches!(err, AccountError::NoSuchAccount(_)), "{err}");
        assert_eq!(list(pool).await.unwrap().len(), 1);
    }
}
