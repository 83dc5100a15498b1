//! Functions and their versions in SQL.
//!
//! A function is one `functions` row and its `versions` rows: `$LATEST` (seq 0, the only
//! mutable one) and the published versions (seq = the number, frozen once written). Every
//! write runs in one transaction that first touches the function's row, so writes to one
//! function are serialised on both backends (SQLite takes its write lock there, before
//! anything is read; PostgreSQL locks the row) and checks like `RevisionId` see the state
//! the write replaces. Deletes take the account's lock before that one: aliases and
//! concurrency settings are written under it (see [`crate::database`]), and on
//! PostgreSQL only a shared lock keeps a delete from racing their checks (an alias
//! created for the version being deleted, say).
//!
//! Code lives in the artifact store; rows name it by artifact id. A write that leaves an
//! artifact referenced by no row reports it in `freed`, for the caller to delete after
//! the commit.

use std::collections::{BTreeMap, BTreeSet};

use ember_wire::function::ModuleKind;
use sqlx::any::AnyRow;
use sqlx::{AnyConnection, Row};

use crate::database::{lock_account, lock_function};
use crate::sealing::{environment_context, open_or_legacy, sql_error};
use crate::Registry;
use ember_core::clock;
use ember_core::names::LATEST;
use ember_core::sealed::Sealer;

/// What the owner of a function chooses besides the code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Config {
    pub description: String,
    pub runtime: String,
    pub handler: String,
    pub role: String,
    /// MiB.
    pub memory_size: i64,
    /// Seconds.
    pub timeout: i64,
    pub environment: BTreeMap<String, String>,
}

/// A version's code: a stored artifact and what was learnt from its upload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Code {
    /// Decided by the module and the handler together.
    pub kind: ModuleKind,
    /// Lambda's `CodeSha256` of the uploaded ZIP.
    pub code_sha256: String,
    /// Bytes of the uploaded ZIP.
    pub code_size: i64,
    /// The module in the artifact store, under the function's account.
    pub artifact_id: String,
}

/// One version of a function, as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Version {
    pub account_id: String,
    pub function_name: String,
    /// `$LATEST` or a number.
    pub version: String,
    /// 0 for `$LATEST`, else the version's number: the order versions are listed in.
    pub seq: i64,
    pub config: Config,
    pub code: Code,
    /// Lambda's format, e.g. `2026-11-25T10:00:00.000+0000`.
    pub last_modified: String,
    pub revision_id: String,
}

/// Function-wide settings (the versions hold the rest).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Function {
    /// Highest version number ever published (0: none).
    pub last_version: i64,
    pub reserved_concurrency: Option<i64>,
}

/// Changes to `$LATEST`'s configuration; `None` leaves a setting as it is.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigChange {
    pub description: Option<String>,
    pub runtime: Option<String>,
    pub handler: Option<HandlerChange>,
    pub role: Option<String>,
    pub memory_size: Option<i64>,
    pub timeout: Option<i64>,
    pub environment: Option<BTreeMap<String, String>>,
}

/// A new handler, with the module kind it gives the code in `artifact_id` (checked by the
/// caller against that artifact; the write is refused if `$LATEST` holds another one by
/// then).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HandlerChange {
    pub handler: String,
    pub artifact_id: String,
    pub kind: ModuleKind,
}

/// New code for `$LATEST`.
#[derive(Clone, Copy, Debug)]
pub struct CodeChange<'a> {
    pub code: &'a Code,
    /// The handler `code`'s kind was decided with; the write is refused if `$LATEST` has
    /// another one by then.
    pub handler: &'a str,
    /// `$LATEST`'s revision the caller expects, if any.
    pub revision_id: Option<&'a str>,
    /// Also publish a version of the result.
    pub publish: bool,
}

/// A write's result: the version it returns and the artifacts it left unreferenced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub version: Version,
    pub freed: Vec<String>,
}

/// Why a write was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the function or version does not exist")]
    NotFound,
    #[error("the function exists already")]
    Exists,
    #[error("the revision id does not match")]
    RevisionMismatch,
    #[error("the code's SHA-256 does not match")]
    CodeSha256Mismatch,
    #[error("the account's code would take {needed} bytes, over its {limit}")]
    StorageExceeded { needed: u64, limit: u64 },
    /// Aliases that route to the version.
    #[error("the version is in use by aliases {0:?}")]
    InUse(Vec<String>),
    /// `$LATEST` changed meanwhile in a way that invalidates what the caller checked.
    #[error("the function changed meanwhile")]
    Changed,
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

const COLUMNS: &str = "account_id, function_name, version, seq, description, runtime, handler, \
     role, memory_size, timeout, environment, module_kind, code_sha256, code_size, \
     artifact_id, last_modified, revision_id";

/// Creates function `name` with `$LATEST` (and version 1 when `publish`); returns the
/// version created last.
pub async fn create(
    registry: &Registry,
    account: &str,
    name: &str,
    config: &Config,
    code: &Code,
    publish: bool,
    storage_limit: u64,
) -> Result<Version, Error> {
    let sealer = registry.sealer()?;
    let mut tx = registry.pool().begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO functions (account_id, name, created_at, last_version) VALUES ($1, $2, $3, 0)",
    )
    .bind(account)
    .bind(name)
    .bind(clock::now_unix() as i64)
    .execute(&mut *tx)
    .await;
    match inserted {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => return Err(Error::Exists),
        other => other?,
    };
    let latest = Version {
        account_id: account.to_owned(),
        function_name: name.to_owned(),
        version: LATEST.to_owned(),
        seq: 0,
        config: config.clone(),
        code: code.clone(),
        last_modified: clock::lambda_timestamp(),
        revision_id: new_revision(),
    };
    insert(&mut tx, sealer, &latest).await?;
    check_storage(&mut tx, account, storage_limit).await?;
    let created = if publish {
        publish_locked(&mut tx, sealer, latest, None).await?
    } else {
        latest
    };
    tx.commit().await?;
    Ok(created)
}

/// Replaces `$LATEST`'s code.
pub async fn update_code(
    registry: &Registry,
    account: &str,
    name: &str,
    change: CodeChange<'_>,
    storage_limit: u64,
) -> Result<Written, Error> {
    let sealer = registry.sealer()?;
    let code = change.code;
    let mut tx = registry.pool().begin().await?;
    lock(&mut tx, account, name).await?;
    let mut latest = latest_locked(&mut tx, sealer, account, name, change.revision_id).await?;
    if latest.config.handler != change.handler {
        return Err(Error::Changed);
    }
    let old_artifact = std::mem::replace(&mut latest.code, code.clone()).artifact_id;
    latest.last_modified = clock::lambda_timestamp();
    latest.revision_id = new_revision();
    sqlx::query(
        "UPDATE versions SET module_kind = $1, code_sha256 = $2, code_size = $3, \
         artifact_id = $4, last_modified = $5, revision_id = $6 \
         WHERE account_id = $7 AND function_name = $8 AND version = $9",
    )
    .bind(kind_name(code.kind))
    .bind(&code.code_sha256)
    .bind(code.code_size)
    .bind(&code.artifact_id)
    .bind(&latest.last_modified)
    .bind(&latest.revision_id)
    .bind(account)
    .bind(name)
    .bind(LATEST)
    .execute(&mut *tx)
    .await?;
    check_storage(&mut tx, account, storage_limit).await?;
    let freed = unreferenced(&mut tx, account, [old_artifact]).await?;
    let version = if change.publish {
        publish_locked(&mut tx, sealer, latest, None).await?
    } else {
        latest
    };
    tx.commit().await?;
    Ok(Written { version, freed })
}

/// Applies `change` to `$LATEST`'s configuration.
pub async fn update_config(
    registry: &Registry,
    account: &str,
    name: &str,
    change: &ConfigChange,
    revision_id: Option<&str>,
) -> Result<Version, Error> {
    let sealer = registry.sealer()?;
    let mut tx = registry.pool().begin().await?;
    lock(&mut tx, account, name).await?;
    let mut latest = latest_locked(&mut tx, sealer, account, name, revision_id).await?;
    let config = &mut latest.config;
    apply(&mut config.description, &change.description);
    apply(&mut config.runtime, &change.runtime);
    apply(&mut config.role, &change.role);
    apply(&mut config.memory_size, &change.memory_size);
    apply(&mut config.timeout, &change.timeout);
    apply(&mut config.environment, &change.environment);
    if let Some(handler) = &change.handler {
        if handler.artifact_id != latest.code.artifact_id {
            return Err(Error::Changed);
        }
        config.handler = handler.handler.clone();
        latest.code.kind = handler.kind;
    }
    latest.last_modified = clock::lambda_timestamp();
    latest.revision_id = new_revision();
    sqlx::query(
        "UPDATE versions SET description = $1, runtime = $2, handler = $3, role = $4, \
         memory_size = $5, timeout = $6, environment = $7, module_kind = $8, \
         last_modified = $9, revision_id = $10 \
         WHERE account_id = $11 AND function_name = $12 AND version = $13",
    )
    .bind(&latest.config.description)
    .bind(&latest.config.runtime)
    .bind(&latest.config.handler)
    .bind(&latest.config.role)
    .bind(latest.config.memory_size)
    .bind(latest.config.timeout)
    .bind(sealed_environment(
        sealer,
        account,
        name,
        LATEST,
        &latest.config.environment,
    )?)
    .bind(kind_name(latest.code.kind))
    .bind(&latest.last_modified)
    .bind(&latest.revision_id)
    .bind(account)
    .bind(name)
    .bind(LATEST)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(latest)
}

/// Publishes `$LATEST` as a new version, or returns the newest published version if
/// `$LATEST` has not changed since (Lambda does the same). `code_sha256` and
/// `revision_id`, when given, must match `$LATEST`'s; `description` defaults to its.
pub async fn publish(
    registry: &Registry,
    account: &str,
    name: &str,
    code_sha256: Option<&str>,
    description: Option<&str>,
    revision_id: Option<&str>,
) -> Result<Version, Error> {
    let sealer = registry.sealer()?;
    let mut tx = registry.pool().begin().await?;
    lock(&mut tx, account, name).await?;
    let latest = latest_locked(&mut tx, sealer, account, name, revision_id).await?;
    if code_sha256.is_some_and(|sha| sha != latest.code.code_sha256) {
        return Err(Error::CodeSha256Mismatch);
    }
    let version = publish_locked(&mut tx, sealer, latest, description).await?;
    tx.commit().await?;
    Ok(version)
}

/// Deletes the function with all its versions, aliases and concurrency settings; returns
/// the artifacts no longer referenced.
pub async fn delete_function(
    registry: &Registry,
    account: &str,
    name: &str,
) -> Result<Vec<String>, Error> {
    let mut tx = registry.pool().begin().await?;
    // Alias and concurrency writers check the function exists under the account's lock.
    lock_account(&mut tx, account).await?;
    lock(&mut tx, account, name).await?;
    let artifacts: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT artifact_id FROM versions WHERE account_id = $1 AND function_name = $2",
    )
    .bind(account)
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    // Versions, aliases and provisioned concurrency go with it (ON DELETE CASCADE).
    sqlx::query("DELETE FROM functions WHERE account_id = $1 AND name = $2")
        .bind(account)
        .bind(name)
        .execute(&mut *tx)
        .await?;
    let freed = unreferenced(&mut tx, account, artifacts.into_iter().map(|(id,)| id)).await?;
    tx.commit().await?;
    Ok(freed)
}

/// Deletes published version `version` and its provisioned concurrency, unless an alias
/// routes to it; returns the artifacts no longer referenced.
pub async fn delete_version(
    registry: &Registry,
    account: &str,
    name: &str,
    version: &str,
) -> Result<Vec<String>, Error> {
    let sealer = registry.sealer()?;
    let mut tx = registry.pool().begin().await?;
    // Alias writers check the versions they route to, and provisioned concurrency writers
    // the version they configure, under the account's lock: without it PostgreSQL would
    // let one commit an alias to the version this deletes.
    lock_account(&mut tx, account).await?;
    lock(&mut tx, account, name).await?;
    let target = fetch_version(&mut tx, sealer, account, name, version)
        .await?
        .ok_or(Error::NotFound)?;
    let aliases: Vec<(String, String, String)> = sqlx::query_as(
        "SELECT name, function_version, routing FROM aliases \
         WHERE account_id = $1 AND function_name = $2 ORDER BY name",
    )
    .bind(account)
    .bind(name)
    .fetch_all(&mut *tx)
    .await?;
    let mut users = Vec::new();
    for (alias, primary, routing) in aliases {
        let routing: BTreeMap<String, serde_json::Value> =
            serde_json::from_str(&routing).map_err(|e| sqlx::Error::Decode(e.into()))?;
        if primary == version || routing.contains_key(version) {
            users.push(alias);
        }
    }
    if !users.is_empty() {
        return Err(Error::InUse(users));
    }
    for delete in [
        "DELETE FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 AND qualifier = $3",
        "DELETE FROM versions WHERE account_id = $1 AND function_name = $2 AND version = $3",
    ] {
        sqlx::query(delete)
            .bind(account)
            .bind(name)
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    let freed = unreferenced(&mut tx, account, [target.code.artifact_id]).await?;
    tx.commit().await?;
    Ok(freed)
}

/// The function-wide settings of `name`, if it exists.
pub async fn get_function(
    registry: &Registry,
    account: &str,
    name: &str,
) -> Result<Option<Function>, sqlx::Error> {
    let row: Option<(i64, Option<i64>)> = sqlx::query_as(
        "SELECT last_version, reserved_concurrency FROM functions \
         WHERE account_id = $1 AND name = $2",
    )
    .bind(account)
    .bind(name)
    .fetch_optional(registry.pool())
    .await?;
    Ok(row.map(|(last_version, reserved_concurrency)| Function {
        last_version,
        reserved_concurrency,
    }))
}

/// Version `version` (`$LATEST` or a number) of `name`.
pub async fn get_version(
    registry: &Registry,
    account: &str,
    name: &str,
    version: &str,
) -> Result<Option<Version>, sqlx::Error> {
    let sealer = registry.sealer()?;
    let mut conn = registry.pool().acquire().await?;
    fetch_version(&mut conn, sealer, account, name, version).await
}

/// The version a qualifier stands for: `$LATEST` when there is none, a version number,
/// or an alias (its primary version; weighted routing is the invoke path's business).
pub async fn resolve(
    registry: &Registry,
    account: &str,
    name: &str,
    qualifier: Option<&str>,
) -> Result<Option<Version>, sqlx::Error> {
    let sealer = registry.sealer()?;
    let qualifier = qualifier.unwrap_or(LATEST);
    if qualifier == LATEST || is_number(qualifier) {
        return get_version(registry, account, name, qualifier).await;
    }
    let mut conn = registry.pool().acquire().await?;
    let primary: Option<(String,)> = sqlx::query_as(
        "SELECT function_version FROM aliases \
         WHERE account_id = $1 AND function_name = $2 AND name = $3",
    )
    .bind(account)
    .bind(name)
    .bind(qualifier)
    .fetch_optional(&mut *conn)
    .await?;
    match primary {
        Some((version,)) => fetch_version(&mut conn, sealer, account, name, &version).await,
        None => Ok(None),
    }
}

/// A page of the account's versions in (function name, seq) order, starting after
/// `after`; `$LATEST` only unless `all_versions`.
pub async fn list(
    registry: &Registry,
    account: &str,
    after: Option<(&str, i64)>,
    limit: i64,
    all_versions: bool,
) -> Result<Vec<Version>, sqlx::Error> {
    let sealer = registry.sealer()?;
    let (after_name, after_seq) = after.unwrap_or(("", -1));
    let only_latest = if all_versions { "" } else { "AND seq = 0" };
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM versions WHERE account_id = $1 \
         AND (function_name > $2 OR (function_name = $2 AND seq > $3)) {only_latest} \
         ORDER BY function_name, seq LIMIT $4"
    ))
    .bind(account)
    .bind(after_name)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(registry.pool())
    .await?;
    rows.iter().map(|row| from_row(sealer, row)).collect()
}

/// A page of `name`'s versions, `$LATEST` first then by number, after seq `after_seq`
/// (-1 for the first page).
pub async fn list_versions(
    registry: &Registry,
    account: &str,
    name: &str,
    after_seq: i64,
    limit: i64,
) -> Result<Vec<Version>, sqlx::Error> {
    let sealer = registry.sealer()?;
    let rows = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM versions WHERE account_id = $1 AND function_name = $2 \
         AND seq > $3 ORDER BY seq LIMIT $4"
    ))
    .bind(account)
    .bind(name)
    .bind(after_seq)
    .bind(limit)
    .fetch_all(registry.pool())
    .await?;
    rows.iter().map(|row| from_row(sealer, row)).collect()
}

/// Every (account, artifact id) some version references.
pub async fn referenced_artifacts(
    registry: &Registry,
) -> Result<BTreeSet<(String, String)>, sqlx::Error> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT DISTINCT account_id, artifact_id FROM versions")
            .fetch_all(registry.pool())
            .await?;
    Ok(rows.into_iter().collect())
}

/// Whether some version of the account references `artifact_id`.
pub async fn artifact_in_use(
    registry: &Registry,
    account: &str,
    artifact_id: &str,
) -> Result<bool, sqlx::Error> {
    let mut conn = registry.pool().acquire().await?;
    in_use(&mut conn, account, artifact_id).await
}

/// Whether `version` names a published version (as opposed to `$LATEST` or an alias).
pub fn is_number(version: &str) -> bool {
    !version.is_empty() && version.bytes().all(|b| b.is_ascii_digit())
}

/// `Ok` if the account has function `name`, else `missing` (the caller's own not-found
/// error): the alias and concurrency writers' check, inside their transactions.
pub(crate) async fn require<E: From<sqlx::Error>>(
    conn: &mut AnyConnection,
    account: &str,
    name: &str,
    missing: E,
) -> Result<(), E> {
    match exists(conn, account, name).await? {
        true => Ok(()),
        false => Err(missing),
    }
}

/// Whether the account has function `name`.
pub(crate) async fn exists(
    conn: &mut AnyConnection,
    account: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM functions WHERE account_id = $1 AND name = $2")
            .bind(account)
            .bind(name)
            .fetch_optional(conn)
            .await?;
    Ok(row.is_some())
}

/// Whether function `name` has `version` (`$LATEST` or a published number): like
/// [`exists`], for the other modules.
pub(crate) async fn has_version(
    conn: &mut AnyConnection,
    account: &str,
    name: &str,
    version: &str,
) -> Result<bool, sqlx::Error> {
    let row: Option<(i64,)> = sqlx::query_as(
        "SELECT 1 FROM versions WHERE account_id = $1 AND function_name = $2 AND version = $3",
    )
    .bind(account)
    .bind(name)
    .bind(version)
    .fetch_optional(conn)
    .await?;
    Ok(row.is_some())
}

/// Takes the function's row lock (see the module's doc) as a transaction's first
/// statement (after the account's lock, if it takes that too); `NotFound` if it does not
/// exist.
async fn lock(conn: &mut AnyConnection, account: &str, name: &str) -> Result<(), Error> {
    if lock_function(conn, account, name).await? {
        Ok(())
    } else {
        Err(Error::NotFound)
    }
}

/// `$LATEST`, checked against the caller's `revision_id` if given; under the lock.
async fn latest_locked(
    conn: &mut AnyConnection,
    sealer: &Sealer,
    account: &str,
    name: &str,
    revision_id: Option<&str>,
) -> Result<Version, Error> {
    let latest = fetch_version(conn, sealer, account, name, LATEST)
        .await?
        .ok_or(Error::NotFound)?;
    if revision_id.is_some_and(|id| id != latest.revision_id) {
        return Err(Error::RevisionMismatch);
    }
    Ok(latest)
}

/// Freezes `latest` as the next version number, unless the newest published version
/// already has the same code and configuration (the description aside: it labels a
/// version, it does not change what runs).
async fn publish_locked(
    conn: &mut AnyConnection,
    sealer: &Sealer,
    latest: Version,
    description: Option<&str>,
) -> Result<Version, Error> {
    let (account, name) = (&latest.account_id, &latest.function_name);
    let newest = sqlx::query(&format!(
        "SELECT {COLUMNS} FROM versions WHERE account_id = $1 AND function_name = $2 \
         AND seq > 0 ORDER BY seq DESC LIMIT 1"
    ))
    .bind(account)
    .bind(name)
    .fetch_optional(&mut *conn)
    .await?
    .as_ref()
    .map(|row| from_row(sealer, row))
    .transpose()?;
    if let Some(newest) = newest {
        let unchanged = Config {
            description: latest.config.description.clone(),
            ..newest.config.clone()
        } == latest.config
            && newest.code.code_sha256 == latest.code.code_sha256;
        if unchanged {
            return Ok(newest);
        }
    }
    let (number,): (i64,) = sqlx::query_as(
        "SELECT last_version + 1 FROM functions WHERE account_id = $1 AND name = $2",
    )
    .bind(account)
    .bind(name)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("UPDATE functions SET last_version = $1 WHERE account_id = $2 AND name = $3")
        .bind(number)
        .bind(account)
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let mut version = latest;
    version.version = number.to_string();
    version.seq = number;
    if let Some(description) = description {
        version.config.description = description.to_owned();
    }
    version.last_modified = clock::lambda_timestamp();
    version.revision_id = new_revision();
    insert(conn, sealer, &version).await?;
    Ok(version)
}

async fn fetch_version(
    conn: &mut AnyConnection,
    sealer: &Sealer,
    account: &str,
    name: &str,
    version: &str,
) -> Result<Option<Version>, sqlx::Error> {
    sqlx::query(&format!(
        "SELECT {COLUMNS} FROM versions \
         WHERE account_id = $1 AND function_name = $2 AND version = $3"
    ))
    .bind(account)
    .bind(name)
    .bind(version)
    .fetch_optional(conn)
    .await?
    .as_ref()
    .map(|row| from_row(sealer, row))
    .transpose()
}

async fn insert(conn: &mut AnyConnection, sealer: &Sealer, v: &Version) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO versions ({COLUMNS}) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17)"
    ))
    .bind(&v.account_id)
    .bind(&v.function_name)
    .bind(&v.version)
    .bind(v.seq)
    .bind(&v.config.description)
    .bind(&v.config.runtime)
    .bind(&v.config.handler)
    .bind(&v.config.role)
    .bind(v.config.memory_size)
    .bind(v.config.timeout)
    .bind(sealed_environment(
        sealer,
        &v.account_id,
        &v.function_name,
        &v.version,
        &v.config.environment,
    )?)
    .bind(kind_name(v.code.kind))
    .bind(&v.code.code_sha256)
    .bind(v.code.code_size)
    .bind(&v.code.artifact_id)
    .bind(&v.last_modified)
    .bind(&v.revision_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Refuses the write if the account's code (each artifact counted once) is now over
/// `limit`. Run after the write, inside its transaction, so the count is what would be
/// committed: an update's replaced artifact no longer counts.
async fn check_storage(conn: &mut AnyConnection, account: &str, limit: u64) -> Result<(), Error> {
    let (used,): (i64,) = sqlx::query_as(
        "SELECT CAST(COALESCE(SUM(code_size), 0) AS BIGINT) FROM \
         (SELECT DISTINCT artifact_id, code_size FROM versions WHERE account_id = $1) AS code",
    )
    .bind(account)
    .fetch_one(conn)
    .await?;
    let used = used.max(0) as u64;
    if used > limit {
        return Err(Error::StorageExceeded {
            needed: used,
            limit,
        });
    }
    Ok(())
}

/// Those of `artifacts` that no version of the account references any more.
async fn unreferenced(
    conn: &mut AnyConnection,
    account: &str,
    artifacts: impl IntoIterator<Item = String>,
) -> Result<Vec<String>, sqlx::Error> {
    let mut freed = Vec::new();
    for artifact in artifacts {
        if !in_use(conn, account, &artifact).await? {
            freed.push(artifact);
        }
    }
    Ok(freed)
}

async fn in_use(
    conn: &mut AnyConnection,
    account: &str,
    artifact_id: &str,
) -> Result<bool, sqlx::Error> {
    let used: Option<(i64,)> =
        sqlx::query_as("SELECT 1 FROM versions WHERE account_id = $1 AND artifact_id = $2 LIMIT 1")
            .bind(account)
            .bind(artifact_id)
            .fetch_optional(conn)
            .await?;
    Ok(used.is_some())
}

fn from_row(sealer: &Sealer, row: &AnyRow) -> Result<Version, sqlx::Error> {
    let (account_id, function_name, version): (String, String, String) = (
        row.try_get("account_id")?,
        row.try_get("function_name")?,
        row.try_get("version")?,
    );
    let environment = open_or_legacy(
        sealer,
        &environment_context(&account_id, &function_name, &version),
        &row.try_get::<String, _>("environment")?,
        |json| serde_json::from_slice(json).map_err(|e| sqlx::Error::Decode(e.into())),
    )?;
    let kind: String = row.try_get("module_kind")?;
    Ok(Version {
        account_id,
        function_name,
        version,
        seq: row.try_get("seq")?,
        config: Config {
            description: row.try_get("description")?,
            runtime: row.try_get("runtime")?,
            handler: row.try_get("handler")?,
            role: row.try_get("role")?,
            memory_size: row.try_get("memory_size")?,
            timeout: row.try_get("timeout")?,
            environment,
        },
        code: Code {
            kind: match kind.as_str() {
                "reactor" => ModuleKind::Reactor,
                "command" => ModuleKind::Command,
                other => {
                    return Err(sqlx::Error::Decode(
                        format!("unknown module kind {other:?}").into(),
                    ))
                }
            },
            code_sha256: row.try_get("code_sha256")?,
            code_size: row.try_get("code_size")?,
            artifact_id: row.try_get("artifact_id")?,
        },
        last_modified: row.try_get("last_modified")?,
        revision_id: row.try_get("revision_id")?,
    })
}

fn apply<T: Clone>(field: &mut T, value: &Option<T>) {
    if let Some(value) = value {
        *field = value.clone();
    }
}

fn kind_name(kind: ModuleKind) -> &'static str {
    match kind {
        ModuleKind::Reactor => "reactor",
        ModuleKind::Command => "command",
    }
}

/// A version's variables as stored: their JSON object, sealed for the version's row.
fn sealed_environment(
    sealer: &Sealer,
    account: &str,
    function: &str,
    version: &str,
    environment: &BTreeMap<String, String>,
) -> Result<String, sqlx::Error> {
    sealer
        .seal(
            &environment_context(account, function, version),
            environment_json(environment).as_bytes(),
        )
        .map_err(sql_error)
}

fn environment_json(environment: &BTreeMap<String, String>) -> String {
    serde_json::Value::from_iter(
        environment
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str()))),
    )
    .to_string()
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::fixtures::{code, config, registry, ACCOUNT};

    #[tokio::test]
    async fn a_taken_name_is_refused_by_the_insert() {
        let (_dir, registry) = registry().await;
        let (config, code) = (config(), code("a"));
        let create = || create(&registry, ACCOUNT, "f", &config, &code, false, 1000);
        let latest = create().await.unwrap();
        assert_eq!((latest.version.as_str(), latest.seq), (LATEST, 0));
        assert!(matches!(create().await, Err(Error::Exists)));
        let stored = get_version(&registry, ACCOUNT, "f", LATEST).await.unwrap();
        assert_eq!(stored, Some(latest));
    }

    #[tokio::test]
    async fn variables_are_sealed_per_version_and_rotation_reseals_them() {
        let (dir, registry) = registry().await;
        let mut config = config();
        config.environment = BTreeMap::from([("DB_PASSWORD".into(), "s3cret-value".into())]);
        create(&registry, ACCOUNT, "f", &config, &code("a"), true, 1000)
            .await
            .unwrap();
        let stored = |version: &'static str| {
            let pool = registry.pool().clone();
            async move {
                let (env,): (String,) = sqlx::query_as(
                    "SELECT environment FROM versions WHERE function_name = 'f' AND version = $1",
                )
                .bind(version)
                .fetch_one(&pool)
                .await
                .unwrap();
                env
            }
        };
        let latest = stored(LATEST).await;
        for env in [&latest, &stored("1").await] {
            assert!(env.starts_with(ember_core::sealed::PREFIX), "{env}");
            assert!(!env.contains("s3cret") && !env.contains("DB_PASSWORD"));
        }

        // Sealed for its own row: $LATEST's variables pasted into version 1 do not open.
        sqlx::query("UPDATE versions SET environment = $1 WHERE version = '1'")
            .bind(&latest)
            .execute(registry.pool())
            .await
            .unwrap();
        assert!(get_version(&registry, ACCOUNT, "f", "1").await.is_err());
        sqlx::query("DELETE FROM versions WHERE version = '1'")
            .execute(registry.pool())
            .await
            .unwrap();

        // After a rotation, resealing moves every value to the new key.
        let new_key = ember_core::keys::Keyring::load_or_create(dir.path())
            .unwrap()
            .rotate()
            .unwrap()
            .id()
            .to_owned();
        let report = crate::sealing::reseal_all(&registry).await.unwrap();
        assert_eq!(report.resealed, 1);
        assert_eq!(
            ember_core::sealed::key_id(&stored(LATEST).await),
            Some(new_key.as_str())
        );
        let read = get_version(&registry, ACCOUNT, "f", LATEST).await.unwrap();
        assert_eq!(read.unwrap().config, config);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn concurrent_writes_to_one_function_take_turns() {
        let (_dir, registry) = registry().await;
        create(&registry, ACCOUNT, "f", &config(), &code("a"), false, 1000)
            .await
            .unwrap();
        let writers = (1..=8).map(|timeout| {
            let registry = registry.clone();
            tokio::spawn(async move {
                let change = ConfigChange {
                    timeout: Some(timeout),
                    ..ConfigChange::default()
                };
                update_config(&registry, ACCOUNT, "f", &change, None).await?;
                publish(&registry, ACCOUNT, "f", None, None, None).await
            })
        });
        let mut published = Vec::new();
        for writer in writers.collect::<Vec<_>>() {
            published.push(writer.await.unwrap().unwrap());
        }
        // Every write committed (none failed on a busy database); the versions are
        // numbered without gaps, each freezing the configuration it saw.
        let versions = list_versions(&registry, ACCOUNT, "f", 0, 100)
            .await
            .unwrap();
        let numbers: Vec<i64> = versions.iter().map(|v| v.seq).collect();
        assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>());
        for version in &published {
            assert!(versions.contains(version), "{version:?}");
        }
        let function = get_function(&registry, ACCOUNT, "f")
            .await
            .unwrap()
            .unwrap();
        assert_eq!(function.last_version, numbers.len() as i64);
    }
}
