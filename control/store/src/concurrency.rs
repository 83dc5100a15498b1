//! Concurrency settings: an account's concurrency limit (the invocations it may have in
//! flight, [`ACCOUNT_CONCURRENCY_LIMIT`] unless the operator set another), a function's
//! reserved concurrency (a cap that is also set aside from the account's limit) and
//! provisioned concurrency (initialized environments kept ready for a published version or
//! an alias). Functions without a reservation share what reservations leave of the limit,
//! the unreserved pool ([`invoke_limit`]).
//!
//! The rules that span rows (the account's pool keeps [`MIN_UNRESERVED_CONCURRENCY`] of
//! its limit unreserved; a function's provisioned total fits in its
//! reservation; no version is provisioned both directly and through an alias) are checked
//! by the writers here inside a transaction that starts with the account's lock (see
//! [`crate::database`]), so two writers cannot both pass a check that only one of them
//! may. Removing concurrency breaks no rule: those writes take no lock.

use sqlx::{AnyConnection, AnyPool};

use crate::aliases::{self, Alias, ProvisionedRoutingError};
use crate::database::lock_account;
use crate::functions;
use ember_core::clock;
use ember_core::names::LATEST;

/// Concurrent executions one account may use unless the operator set its own limit
/// ([`set_account_limit`]), Lambda's default quota.
pub const ACCOUNT_CONCURRENCY_LIMIT: i64 = 1000;

/// The highest limit an operator may set on one account.
pub const MAX_ACCOUNT_CONCURRENCY_LIMIT: i64 = 1_000_000;

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

/// One provisioned configuration with the function it belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FunctionProvisioned {
    pub account: String,
    pub function: String,
    pub config: ProvisionedConfig,
}

/// Why a concurrency setting was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the function does not exist")]
    FunctionNotFound,
    #[error("the function has no version {0}")]
    VersionNotFound(String),
    #[error("the function has no alias {0}")]
    AliasNotFound(String),
    #[error("the version or alias has no provisioned concurrency")]
    ConfigNotFound,
    #[error("the reservation is below the function's provisioned concurrency, {provisioned}")]
    ReservationBelowProvisioned { provisioned: i64 },
    #[error(
        "the reservation would leave the account less than {MIN_UNRESERVED_CONCURRENCY} unreserved"
    )]
    ReservationOverAccount,
    #[error("the function's provisioned concurrency would exceed its reservation")]
    ProvisionedOverReservation,
    #[error("the provisioned concurrency would leave the account less than {MIN_UNRESERVED_CONCURRENCY} unreserved")]
    ProvisionedOverAccount,
    /// A version an alias with provisioned concurrency routes to.
    #[error("a provisioned alias routes to the version")]
    VersionInProvisionedAlias,
    #[error(transparent)]
    Routing(#[from] ProvisionedRoutingError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Why an account's concurrency limit could not be set.
#[derive(Debug, thiserror::Error)]
pub enum LimitError {
    #[error("no account has id {0}")]
    AccountNotFound(String),
    #[error("a concurrency limit is from 0 to {MAX_ACCOUNT_CONCURRENCY_LIMIT}, not {0}")]
    OutOfRange(i64),
    #[error(
        "the account's functions reserve {committed} (reserved or provisioned concurrency); \
         its limit must leave {MIN_UNRESERVED_CONCURRENCY} unreserved beyond that, so at \
         least {}: remove reservations first",
        committed + MIN_UNRESERVED_CONCURRENCY
    )]
    BelowReservations { committed: i64 },
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// An account's concurrency as the operator sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AccountConcurrency {
    /// Invocations it may have in flight.
    pub limit: i64,
    /// Set aside by its functions: each one's reservation or, without one, its
    /// provisioned concurrency.
    pub committed: i64,
    /// Shared by its functions without a reservation: the limit less every reservation.
    pub unreserved: i64,
}

/// The cap an invocation of a function runs under.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvokeLimit {
    /// The function's reserved concurrency: its invocations in flight, at most this many.
    Reserved(i64),
    /// The account's unreserved pool: the invocations in flight of all its functions
    /// without a reservation, at most this many.
    Unreserved(i64),
}

/// The invoke path's question: what caps an invocation of `function` now. One statement,
/// so an operator's change applies to the next invocation.
pub async fn invoke_limit(
    pool: &AnyPool,
    account: &str,
    function: &str,
) -> Result<InvokeLimit, sqlx::Error> {
    let row: (Option<i64>, Option<i64>, i64) = sqlx::query_as(
        "SELECT \
             (SELECT reserved_concurrency FROM functions WHERE account_id = $1 AND name = $2), \
             (SELECT concurrency_limit FROM accounts WHERE id = $1), \
             (SELECT CAST(COALESCE(SUM(reserved_concurrency), 0) AS BIGINT) FROM functions \
              WHERE account_id = $1)",
    )
    .bind(account)
    .bind(function)
    .fetch_one(pool)
    .await?;
    Ok(match row {
        (Some(reserved), _, _) => InvokeLimit::Reserved(reserved),
        (None, limit, reserved) => InvokeLimit::Unreserved(
            limit
                .unwrap_or(ACCOUNT_CONCURRENCY_LIMIT)
                .saturating_sub(reserved)
                .max(0),
        ),
    })
}

/// The account's limit, what its functions set aside and what that leaves unreserved.
pub async fn account_concurrency(
    pool: &AnyPool,
    account: &str,
) -> Result<AccountConcurrency, LimitError> {
    let mut conn = pool.acquire().await?;
    concurrency_of(&mut conn, account).await
}

/// Sets the account's concurrency limit (`None`: back to the default). Refused when its
/// functions' reservations would not leave [`MIN_UNRESERVED_CONCURRENCY`] of it
/// unreserved; an account with no reservation may have any limit from 0 (which throttles
/// every invocation) to [`MAX_ACCOUNT_CONCURRENCY_LIMIT`].
pub async fn set_account_limit(
    pool: &AnyPool,
    account: &str,
    limit: Option<i64>,
) -> Result<AccountConcurrency, LimitError> {
    if let Some(n) = limit.filter(|n| !(0..=MAX_ACCOUNT_CONCURRENCY_LIMIT).contains(n)) {
        return Err(LimitError::OutOfRange(n));
    }
    let mut tx = pool.begin().await?;
    lock_account(&mut tx, account).await?;
    let now = concurrency_of(&mut tx, account).await?;
    let wanted = limit.unwrap_or(ACCOUNT_CONCURRENCY_LIMIT);
    if now.committed > 0 && wanted < now.committed + MIN_UNRESERVED_CONCURRENCY {
        return Err(LimitError::BelowReservations {
            committed: now.committed,
        });
    }
    sqlx::query("UPDATE accounts SET concurrency_limit = $1 WHERE id = $2")
        .bind(limit)
        .bind(account)
        .execute(&mut *tx)
        .await?;
    let set = concurrency_of(&mut tx, account).await?;
    tx.commit().await?;
    Ok(set)
}

/// [`account_concurrency`] on a connection.
async fn concurrency_of(
    conn: &mut AnyConnection,
    account: &str,
) -> Result<AccountConcurrency, LimitError> {
    let limit = account_limit(conn, account)
        .await?
        .ok_or_else(|| LimitError::AccountNotFound(account.to_owned()))?;
    let committed = committed_elsewhere(conn, account, "").await?;
    let (reserved,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(reserved_concurrency), 0) AS BIGINT) FROM functions \
         WHERE account_id = $1",
    )
    .bind(account)
    .fetch_one(&mut *conn)
    .await?;
    Ok(AccountConcurrency {
        limit,
        committed,
        unreserved: (limit - reserved).max(0),
    })
}

/// The account's limit; `None` when there is no such account. (The fixtures' functions may
/// belong to an account with no row: those have the default.)
async fn account_limit(
    conn: &mut AnyConnection,
    account: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let row: Option<(Option<i64>,)> =
        sqlx::query_as("SELECT concurrency_limit FROM accounts WHERE id = $1")
            .bind(account)
            .fetch_optional(conn)
            .await?;
    Ok(row.map(|(limit,)| limit.unwrap_or(ACCOUNT_CONCURRENCY_LIMIT)))
}

/// The function's reservation (`None`: it has none).
pub async fn reservation(
    pool: &AnyPool,
    account: &str,
    function: &str,
) -> Result<Option<i64>, Error> {
    let mut conn = pool.acquire().await?;
    reservation_of(&mut conn, account, function).await
}

/// The invoke path's question: the function's concurrency cap, if it exists and has one.
pub async fn reserved(
    pool: &AnyPool,
    account: &str,
    function: &str,
) -> Result<Option<i64>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    Ok(function_row(&mut conn, account, function).await?.flatten())
}

/// Reserves `reserved` concurrency for the function: no less than its provisioned total,
/// and leaving the account its minimum unreserved.
pub async fn put_reserved(
    pool: &AnyPool,
    account: &str,
    function: &str,
    reserved: i64,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    lock_account(&mut tx, account).await?;
    reservation_of(&mut tx, account, function).await?;
    let provisioned: i64 = configs(&mut tx, account, function)
        .await?
        .iter()
        .map(|c| c.requested)
        .sum();
    if reserved < provisioned {
        return Err(Error::ReservationBelowProvisioned { provisioned });
    }
    let elsewhere = committed_elsewhere(&mut tx, account, function).await?;
    if elsewhere + reserved > reservable(&mut tx, account).await? {
        return Err(Error::ReservationOverAccount);
    }
    set_reserved(&mut tx, account, function, Some(reserved)).await?;
    tx.commit().await?;
    Ok(())
}

/// Removes the function's reservation. That never breaks a rule: the function's
/// provisioned concurrency (at most its reservation) simply moves into the unreserved
/// pool.
pub async fn delete_reserved(pool: &AnyPool, account: &str, function: &str) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    if set_reserved(&mut conn, account, function, None).await? {
        Ok(())
    } else {
        Err(Error::FunctionNotFound)
    }
}

/// Creates or replaces the configuration of `qualifier` (an alias or a published
/// version) with `requested` environments; returns it as stored.
pub async fn put_provisioned(
    pool: &AnyPool,
    account: &str,
    function: &str,
    qualifier: &str,
    requested: i64,
) -> Result<ProvisionedConfig, Error> {
    if qualifier == LATEST {
        return Err(ProvisionedRoutingError::Unpublished.into());
    }
    let mut tx = pool.begin().await?;
    lock_account(&mut tx, account).await?;
    let reserved = reservation_of(&mut tx, account, function).await?;
    let configs = configs(&mut tx, account, function).await?;
    let is_provisioned = |q: &str| configs.iter().any(|c| c.qualifier == q);
    match target(&mut tx, account, function, qualifier).await? {
        Some(alias) => aliases::check_provisioned(&alias.routing, is_provisioned)?,
        None => {
            // A version may be provisioned only when no provisioned alias routes to it.
            for config in configs
                .iter()
                .filter(|c| !functions::is_number(&c.qualifier))
            {
                let Some(alias) =
                    aliases::fetch(&mut tx, account, function, &config.qualifier).await?
                else {
                    continue;
                };
                if alias.routing.versions().any(|v| v == qualifier) {
                    return Err(Error::VersionInProvisionedAlias);
                }
            }
        }
    }
    let others: i64 = configs
        .iter()
        .filter(|c| c.qualifier != qualifier)
        .map(|c| c.requested)
        .sum();
    match reserved {
        Some(reserved) if others + requested > reserved => {
            return Err(Error::ProvisionedOverReservation);
        }
        Some(_) => {}
        // Without a reservation, provisioned concurrency comes out of the unreserved pool.
        None => {
            let elsewhere = committed_elsewhere(&mut tx, account, function).await?;
            if elsewhere + others + requested > reservable(&mut tx, account).await? {
                return Err(Error::ProvisionedOverAccount);
            }
        }
    }
    let config = ProvisionedConfig {
        qualifier: qualifier.to_owned(),
        requested,
        last_modified: clock::lambda_timestamp(),
    };
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
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(config)
}

/// The configuration of `qualifier`, an existing alias or published version.
pub async fn get_provisioned(
    pool: &AnyPool,
    account: &str,
    function: &str,
    qualifier: &str,
) -> Result<ProvisionedConfig, Error> {
    let mut conn = pool.acquire().await?;
    existing_target(&mut conn, account, function, qualifier).await?;
    let row: Option<(String, i64, String)> = sqlx::query_as(
        "SELECT qualifier, requested, last_modified FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 AND qualifier = $3",
    )
    .bind(account)
    .bind(function)
    .bind(qualifier)
    .fetch_optional(&mut *conn)
    .await?;
    row.map(config).ok_or(Error::ConfigNotFound)
}

/// Removes the configuration of `qualifier`, an existing alias or published version; like
/// Lambda's, removing one that does not exist succeeds. One statement after the checks,
/// and no lock: removing concurrency breaks no rule.
pub async fn delete_provisioned(
    pool: &AnyPool,
    account: &str,
    function: &str,
    qualifier: &str,
) -> Result<(), Error> {
    let mut conn = pool.acquire().await?;
    existing_target(&mut conn, account, function, qualifier).await?;
    sqlx::query(
        "DELETE FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 AND qualifier = $3",
    )
    .bind(account)
    .bind(function)
    .bind(qualifier)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Up to `limit` of the function's configurations with a qualifier after `after` (`""`:
/// from the start), in qualifier order.
pub async fn list_provisioned(
    pool: &AnyPool,
    account: &str,
    function: &str,
    after: &str,
    limit: i64,
) -> Result<Vec<ProvisionedConfig>, Error> {
    let mut conn = pool.acquire().await?;
    functions::require(&mut conn, account, function, Error::FunctionNotFound).await?;
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT qualifier, requested, last_modified FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 AND qualifier > $3 \
         ORDER BY qualifier LIMIT $4",
    )
    .bind(account)
    .bind(function)
    .bind(after)
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(config).collect())
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

/// The concurrency the account can set aside for functions: its limit less the minimum
/// unreserved.
async fn reservable(conn: &mut AnyConnection, account: &str) -> Result<i64, sqlx::Error> {
    let limit = account_limit(conn, account)
        .await?
        .unwrap_or(ACCOUNT_CONCURRENCY_LIMIT);
    Ok(limit - MIN_UNRESERVED_CONCURRENCY)
}

/// The function's row: `None` when it does not exist, `Some(None)` when it has no
/// reservation.
async fn function_row(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
) -> Result<Option<Option<i64>>, sqlx::Error> {
    let row: Option<(Option<i64>,)> = sqlx::query_as(
        "SELECT reserved_concurrency FROM functions WHERE account_id = $1 AND name = $2",
    )
    .bind(account)
    .bind(function)
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|(reserved,)| reserved))
}

/// The function's reservation, `FunctionNotFound` if there is no such function.
async fn reservation_of(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
) -> Result<Option<i64>, Error> {
    function_row(conn, account, function)
        .await?
        .ok_or(Error::FunctionNotFound)
}

/// Sets (or with `None` removes) the function's reservation; false when there is no such
/// function.
async fn set_reserved(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
    reserved: Option<i64>,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE functions SET reserved_concurrency = $1 WHERE account_id = $2 AND name = $3",
    )
    .bind(reserved)
    .bind(account)
    .bind(function)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Every configuration of the function.
async fn configs(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
) -> Result<Vec<ProvisionedConfig>, sqlx::Error> {
    let rows: Vec<(String, i64, String)> = sqlx::query_as(
        "SELECT qualifier, requested, last_modified FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 ORDER BY qualifier",
    )
    .bind(account)
    .bind(function)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(config).collect())
}

/// Concurrency the account's other functions take from its pool: each one's reservation,
/// or, without one, its provisioned concurrency (which then comes out of the unreserved
/// pool).
async fn committed_elsewhere(
    conn: &mut AnyConnection,
    account: &str,
    except_function: &str,
) -> Result<i64, sqlx::Error> {
    let (sum,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(COALESCE(f.reserved_concurrency, \
             (SELECT COALESCE(SUM(p.requested), 0) FROM provisioned_concurrency p \
              WHERE p.account_id = f.account_id AND p.function_name = f.name))), 0) AS BIGINT) \
         FROM functions f WHERE f.account_id = $1 AND f.name <> $2",
    )
    .bind(account)
    .bind(except_function)
    .fetch_one(conn)
    .await?;
    Ok(sum)
}

/// The version or alias of an existing function a configuration is for, which must exist:
/// `Some(alias)` for an alias, `None` for a published version.
async fn target(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
    qualifier: &str,
) -> Result<Option<Alias>, Error> {
    if functions::is_number(qualifier) {
        if functions::has_version(conn, account, function, qualifier).await? {
            return Ok(None);
        }
        return Err(Error::VersionNotFound(qualifier.to_owned()));
    }
    match aliases::fetch(conn, account, function, qualifier).await? {
        Some(alias) => Ok(Some(alias)),
        None => Err(Error::AliasNotFound(qualifier.to_owned())),
    }
}

/// Like [`target`] for reading or removing a configuration, which `$LATEST` never has;
/// the function must exist.
async fn existing_target(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
    qualifier: &str,
) -> Result<(), Error> {
    if qualifier == LATEST {
        return Err(ProvisionedRoutingError::Unpublished.into());
    }
    functions::require(conn, account, function, Error::FunctionNotFound).await?;
    target(conn, account, function, qualifier).await.map(drop)
}

fn config((qualifier, requested, last_modified): (String, i64, String)) -> ProvisionedConfig {
    ProvisionedConfig {
        qualifier,
        requested,
        last_modified,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aliases::NewAlias;
    use crate::fixtures::{self, ACCOUNT};

    async fn alias(pool: &AnyPool, name: &str, weights: &[(&str, f64)]) {
        let new = NewAlias {
            name: name.into(),
            function_version: "1".into(),
            description: String::new(),
            weights: weights.iter().map(|&(v, w)| (v.to_owned(), w)).collect(),
        };
        aliases::create(pool, ACCOUNT, "f", new).await.unwrap();
    }

    #[tokio::test]
    async fn reservations_fit_provisioned_totals_and_the_account() {
        let (_dir, registry) = fixtures::registry().await;
        let pool = registry.pool();
        fixtures::function(&registry, "f", 1).await;
        fixtures::function(&registry, "g", 0).await;
        assert_eq!(reservation(pool, ACCOUNT, "f").await.unwrap(), None);
        assert!(matches!(
            reservation(pool, ACCOUNT, "h").await,
            Err(Error::FunctionNotFound)
        ));

        put_provisioned(pool, ACCOUNT, "f", "1", 5).await.unwrap();
        assert!(matches!(
            put_reserved(pool, ACCOUNT, "f", 4).await,
            Err(Error::ReservationBelowProvisioned { provisioned: 5 })
        ));
        put_reserved(pool, ACCOUNT, "f", 5).await.unwrap();
        assert_eq!(reserved(pool, ACCOUNT, "f").await.unwrap(), Some(5));
        assert!(matches!(
            put_provisioned(pool, ACCOUNT, "f", "1", 6).await,
            Err(Error::ProvisionedOverReservation)
        ));

        // 900 of the account's 1000 may be reserved: 5 for `f`, at most 895 for `g`.
        assert!(matches!(
            put_reserved(pool, ACCOUNT, "g", 896).await,
            Err(Error::ReservationOverAccount)
        ));
        put_reserved(pool, ACCOUNT, "g", 895).await.unwrap();
        delete_reserved(pool, ACCOUNT, "g").await.unwrap();
        assert_eq!(reservation(pool, ACCOUNT, "g").await.unwrap(), None);
        assert!(matches!(
            delete_reserved(pool, ACCOUNT, "h").await,
            Err(Error::FunctionNotFound)
        ));
        // Without a reservation, `f`'s provisioned concurrency comes out of the pool too.
        delete_reserved(pool, ACCOUNT, "f").await.unwrap();
        put_reserved(pool, ACCOUNT, "g", 890).await.unwrap();
        assert!(matches!(
            put_provisioned(pool, ACCOUNT, "f", "1", 11).await,
            Err(Error::ProvisionedOverAccount)
        ));
        put_provisioned(pool, ACCOUNT, "f", "1", 10).await.unwrap();
    }

    #[tokio::test]
    async fn account_limits_carve_reservations_and_bound_the_unreserved_pool() {
        let (_dir, registry) = fixtures::registry().await;
        let pool = registry.pool();
        fixtures::function(&registry, "f", 1).await;
        fixtures::function(&registry, "g", 0).await;
        let unreserved = |n| InvokeLimit::Unreserved(n);
        assert_eq!(
            invoke_limit(pool, ACCOUNT, "g").await.unwrap(),
            unreserved(1000)
        );
        put_reserved(pool, ACCOUNT, "f", 30).await.unwrap();
        assert_eq!(
            invoke_limit(pool, ACCOUNT, "f").await.unwrap(),
            InvokeLimit::Reserved(30)
        );
        assert_eq!(
            invoke_limit(pool, ACCOUNT, "g").await.unwrap(),
            unreserved(970)
        );

        // Lowering the limit must leave 100 beyond the reservations.
        assert!(matches!(
            set_account_limit(pool, ACCOUNT, Some(129)).await,
            Err(LimitError::BelowReservations { committed: 30 })
        ));
        let set = set_account_limit(pool, ACCOUNT, Some(130)).await.unwrap();
        assert_eq!(
            set,
            AccountConcurrency {
                limit: 130,
                committed: 30,
                unreserved: 100
            }
        );
        assert_eq!(
            invoke_limit(pool, ACCOUNT, "g").await.unwrap(),
            unreserved(100)
        );
        // Reservations now fit the lower limit.
        assert!(matches!(
            put_reserved(pool, ACCOUNT, "f", 31).await,
            Err(Error::ReservationOverAccount)
        ));
        // Without reservations, any limit from 0; back to the default with None.
        delete_reserved(pool, ACCOUNT, "f").await.unwrap();
        set_account_limit(pool, ACCOUNT, Some(0)).await.unwrap();
        assert_eq!(
            invoke_limit(pool, ACCOUNT, "f").await.unwrap(),
            unreserved(0)
        );
        assert!(matches!(
            put_reserved(pool, ACCOUNT, "f", 0).await,
            Err(Error::ReservationOverAccount)
        ));
        assert!(matches!(
            set_account_limit(pool, ACCOUNT, Some(-1)).await,
            Err(LimitError::OutOfRange(-1))
        ));
        assert!(matches!(
            set_account_limit(pool, ACCOUNT, Some(MAX_ACCOUNT_CONCURRENCY_LIMIT + 1)).await,
            Err(LimitError::OutOfRange(_))
        ));
        assert!(matches!(
            set_account_limit(pool, "999999999999", Some(5)).await,
            Err(LimitError::AccountNotFound(_))
        ));
        let default = set_account_limit(pool, ACCOUNT, None).await.unwrap();
        assert_eq!(default.limit, ACCOUNT_CONCURRENCY_LIMIT);
        assert_eq!(account_concurrency(pool, ACCOUNT).await.unwrap(), default);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_reservations_pass_the_account_check_in_turn() {
        let (_dir, registry) = fixtures::registry().await;
        let pool = registry.pool();
        let names: Vec<String> = (0..6).map(|i| format!("f{i}")).collect();
        for name in &names {
            fixtures::function(&registry, name, 0).await;
        }
        // Each fits alone; three of them fill the 900 the account may set aside.
        let writers: Vec<_> = names
            .iter()
            .map(|name| {
                let (pool, name) = (pool.clone(), name.clone());
                tokio::spawn(async move { put_reserved(&pool, ACCOUNT, &name, 300).await })
            })
            .collect();
        let mut granted = 0;
        for writer in writers {
            match writer.await.unwrap() {
                Ok(()) => granted += 1,
                Err(Error::ReservationOverAccount) => {}
                Err(e) => panic!("{e}"),
            }
        }
        assert_eq!(granted, 3);
        let mut total = 0;
        for name in &names {
            total += reservation(pool, ACCOUNT, name).await.unwrap().unwrap_or(0);
        }
        assert_eq!(total, 900);
    }

    #[tokio::test]
    async fn configurations_name_existing_targets_counted_once() {
        let (_dir, registry) = fixtures::registry().await;
        let pool = registry.pool();
        fixtures::function(&registry, "f", 3).await;
        alias(pool, "live", &[("2", 0.5)]).await;
        alias(pool, "other", &[]).await;

        assert!(matches!(
            put_provisioned(pool, ACCOUNT, "f", LATEST, 1).await,
            Err(Error::Routing(ProvisionedRoutingError::Unpublished))
        ));
        assert!(matches!(
            put_provisioned(pool, ACCOUNT, "f", "9", 1).await,
            Err(Error::VersionNotFound(v)) if v == "9"
        ));
        assert!(matches!(
            put_provisioned(pool, ACCOUNT, "f", "nope", 1).await,
            Err(Error::AliasNotFound(a)) if a == "nope"
        ));
        assert!(matches!(
            put_provisioned(pool, ACCOUNT, "g", "1", 1).await,
            Err(Error::FunctionNotFound)
        ));

        let config = put_provisioned(pool, ACCOUNT, "f", "live", 2)
            .await
            .unwrap();
        assert_eq!((config.qualifier.as_str(), config.requested), ("live", 2));
        assert_eq!(
            get_provisioned(pool, ACCOUNT, "f", "live").await.unwrap(),
            config
        );
        for version in ["1", "2"] {
            assert!(matches!(
                put_provisioned(pool, ACCOUNT, "f", version, 1).await,
                Err(Error::VersionInProvisionedAlias)
            ));
        }
        put_provisioned(pool, ACCOUNT, "f", "3", 1).await.unwrap();
        // `other` routes to version 1 too: aliases may share a version that has no
        // configuration of its own.
        put_provisioned(pool, ACCOUNT, "f", "other", 1)
            .await
            .unwrap();

        assert!(matches!(
            get_provisioned(pool, ACCOUNT, "f", "1").await,
            Err(Error::ConfigNotFound)
        ));
        assert!(matches!(
            get_provisioned(pool, ACCOUNT, "f", "9").await,
            Err(Error::VersionNotFound(_))
        ));
        delete_provisioned(pool, ACCOUNT, "f", "live")
            .await
            .unwrap();
        // Deleting what is not there succeeds, for a target that exists.
        delete_provisioned(pool, ACCOUNT, "f", "live")
            .await
            .unwrap();
        assert!(matches!(
            delete_provisioned(pool, ACCOUNT, "f", "nope").await,
            Err(Error::AliasNotFound(_))
        ));
        let left: Vec<String> = list_provisioned(pool, ACCOUNT, "f", "", 10)
            .await
            .unwrap()
            .into_iter()
            .map(|c| c.qualifier)
            .collect();
        assert_eq!(left, ["3", "other"]);
        assert_eq!(all_provisioned(pool).await.unwrap().len(), 2);
    }
}
