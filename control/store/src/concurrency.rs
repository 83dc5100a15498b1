//! Concurrency settings: a function's reserved concurrency (a cap that is also set aside
//! from the account's pool) and provisioned concurrency (initialized environments kept
//! ready for a published version or an alias).
//!
//! The rules that span rows (the account's pool must keep [`MIN_UNRESERVED_CONCURRENCY`]
//! free; a function's provisioned total fits in its reservation) are checked by the API
//! inside a transaction that starts with [`lock_account`], so two writers cannot both
//! pass a check that only one of them may.

use sqlx::{Any, AnyConnection, AnyPool, Executor};

/// Concurrent executions one account may use, Lambda's default quota.
pub const ACCOUNT_CONCURRENCY_LIMIT: i64 = 1000;

/// Concurrency that reservations may not take from the account, so functions without a
/// reservation can still run (Lambda's rule).
pub const MIN_UNRESERVED_CONCURRENCY: i64 = 100;

/// One provisioned concurrency configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionedConfig {
    /// A published version number or an alias name.
    pub qualifier: String,
    /// Environments asked for.
    pub requested: i64,
    /// When the request last changed, in Lambda's format.
    pub last_modified: String,
}

/// Starts serializing the caller's transaction against every other transaction that
/// locks `account`: a no-op write to the account's row. The first statement of the
/// transaction, it takes SQLite's single writer lock, or the row's lock in PostgreSQL,
/// before anything is read.
pub async fn lock_account(conn: &mut AnyConnection, account: &str) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET name = name WHERE id = $1")
        .bind(account)
        .execute(conn)
        .await?;
    Ok(())
}

/// The function's reservation: `None` when the function does not exist, `Some(None)` when
/// it has no reservation.
pub async fn reservation<'e, E>(
    db: E,
    account: &str,
    function: &str,
) -> Result<Option<Option<i64>>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT reserved_concurrency FROM functions WHERE account_id = $1 AND name = $2",
    )
    .bind(account)
    .bind(function)
    .fetch_optional(db)
    .await?;
    Ok(row.map(|(reserved,)| reserved))
}

/// The invoke path's question: the function's concurrency cap, if it has one.
pub async fn reserved(
    pool: &AnyPool,
    account: &str,
    function: &str,
) -> Result<Option<i64>, sqlx::Error> {
    Ok(reservation(pool, account, function).await?.flatten())
}

/// Sets (or with `None` removes) the function's reservation; false when there is no such
/// function.
pub async fn set_reserved<'e, E>(
    db: E,
    account: &str,
    function: &str,
    reserved: Option<i64>,
) -> Result<bool, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let done = sqlx::query(
        "UPDATE functions SET reserved_concurrency = $1 WHERE account_id = $2 AND name = $3",
    )
    .bind(reserved)
    .bind(account)
    .bind(function)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Concurrency the account's other functions take from its pool: each one's reservation,
/// or, without one, its provisioned concurrency (which then comes out of the unreserved
/// pool).
pub async fn committed_elsewhere<'e, E>(
    db: E,
    account: &str,
    except_function: &str,
) -> Result<i64, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let (sum,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(COALESCE(f.reserved_concurrency, \
             (SELECT COALESCE(SUM(p.requested), 0) FROM provisioned_concurrency p \
              WHERE p.account_id = f.account_id AND p.function_name = f.name))), 0) AS BIGINT) \
         FROM functions f WHERE f.account_id = $1 AND f.name <> $2",
    )
    .bind(account)
    .bind(except_function)
    .fetch_one(db)
    .await?;
    Ok(sum)
}

/// One configuration of the function, if `qualifier` has one.
pub async fn provisioned<'e, E>(
    db: E,
    account: &str,
    function: &str,
    qualifier: &str,
) -> Result<Option<ProvisionedConfig>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row: Option<(String, i64, String)> = sqlx::query_as(
        "SELECT qualifier, requested, last_modified FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 AND qualifier = $3",
    )
    .bind(account)
    .bind(function)
    .bind(qualifier)
    .fetch_optional(db)
    .await?;
    Ok(row.map(config))
}

/// Up to `limit` of the function's configurations with a qualifier after `after` (`""`:
/// from the start), in qualifier order.
pub async fn list_provisioned<'e, E>(
    db: E,
    account: &str,
    function: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<ProvisionedConfig>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT qualifier, requested, last_modified FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 AND qualifier > $3 \
         ORDER BY qualifier LIMIT $4",
    )
    .bind(account)
    .bind(function)
    .bind(after)
    .bind(limit)
    .fetch_all(db)
    .await?;
    Ok(rows.into_iter().map(config).collect())
}

/// One provisioned configuration with the function it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionProvisioned {
    pub account: String,
    pub function: String,
    pub config: ProvisionedConfig,
}

/// Every provisioned configuration of every account: what the fleet places.
pub async fn all_provisioned(pool: &AnyPool) -> Result<Vec<FunctionProvisioned>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64, String)> = sqlx::query_as(
        "SELECT account_id, function_name, qualifier, requested, last_modified \
         FROM provisioned_concurrency ORDER BY account_id, function_name, qualifier",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(account, function, qualifier, requested, last_modified)| FunctionProvisioned {
                account,
                function,
                config: config((qualifier, requested, last_modified)),
            },
        )
        .collect())
}

/// Creates or replaces the configuration of `config.qualifier`.
pub async fn put_provisioned<'e, E>(
    db: E,
    account: &str,
    function: &str,
    config: &ProvisionedConfig,
) -> Result<(), sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    sqlx::query(
        "INSERT INTO provisioned_concurrency \
             (account_id, function_name, qualifier, requested, last_modified) \
         VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (account_id, function_name, qualifier) \
         DO UPDATE SET requested = excluded.requested, last_modified = excluded.last_modified",
    )
    .bind(account)
    .bind(function)
    .bind(&config.qualifier)
    .bind(config.requested)
    .bind(&config.last_modified)
    .execute(db)
    .await?;
    Ok(())
}

/// Removes the configuration of `qualifier`; false when there was none.
pub async fn delete_provisioned<'e, E>(
    db: E,
    account: &str,
    function: &str,
    qualifier: &str,
) -> Result<bool, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let done = sqlx::query(
        "DELETE FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 AND qualifier = $3",
    )
    .bind(account)
    .bind(function)
    .bind(qualifier)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

fn config((qualifier, requested, last_modified): (String, i64, String)) -> ProvisionedConfig {
    ProvisionedConfig {
        qualifier,
        requested,
        last_modified,
    }
}
