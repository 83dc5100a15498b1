//! Which columns hold secrets, and re-sealing them: under the active master key after a
//! rotation, and for the first time for rows written before they were sealed.
//!
//! Sealed columns ([`ember_core::sealed`]): `access_keys.secret`,
//! `versions.environment` and `events.payload`. Each value's context names its row, so a
//! value moved to another row does not open.

use sqlx::AnyPool;

use ember_core::sealed::{self, SealError, Sealer};

use crate::Registry;

/// The context of access key `key_id`'s secret.
pub(crate) fn access_key_context(key_id: &str) -> String {
    format!("access_keys.secret/{key_id}")
}

/// The context of a version's environment variables.
pub(crate) fn environment_context(account: &str, function: &str, version: &str) -> String {
    format!("versions.environment/{account}/{function}/{version}")
}

/// The context of an event's payload.
pub(crate) fn event_context(id: &str) -> String {
    format!("events.payload/{id}")
}

/// `err` as the store's SQL error type: a value that cannot be sealed or opened is as
/// fatal to the query as a column that cannot be decoded.
pub(crate) fn sql_error(err: SealError) -> sqlx::Error {
    sqlx::Error::Decode(err.into())
}

/// What [`reseal_all`] did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ResealReport {
    /// Values now sealed under the active key.
    pub resealed: u64,
}

/// One sealed column: its table, its key columns and the context of a row.
struct Column {
    table: &'static str,
    column: &'static str,
    keys: &'static [&'static str],
    context: fn(&[String]) -> String,
}

const COLUMNS: &[Column] = &[
    Column {
        table: "access_keys",
        column: "secret",
        keys: &["key_id"],
        context: |k| access_key_context(&k[0]),
    },
    Column {
        table: "versions",
        column: "environment",
        keys: &["account_id", "function_name", "version"],
        context: |k| environment_context(&k[0], &k[1], &k[2]),
    },
    Column {
        table: "events",
        column: "payload",
        keys: &["id"],
        context: |k| event_context(&k[0]),
    },
];

/// Seals every secret not yet sealed under the active master key: values sealed under an
/// older key, and values stored before secrets were sealed. A value a writer changes
/// meanwhile is left to that writer, which seals under the active key itself.
pub async fn reseal_all(registry: &Registry) -> Result<ResealReport, sqlx::Error> {
    let sealer = registry.sealer()?;
    let active = sealer.active_key_id().map_err(sql_error)?;
    let mut report = ResealReport::default();
    for column in COLUMNS {
        for (keys, value) in stale(registry.pool(), column, &active).await? {
            let context = (column.context)(&keys);
            let Some(resealed) = sealer.reseal(&context, &value).map_err(sql_error)? else {
                continue;
            };
            let statement = format!(
                "UPDATE {} SET {} = $1 WHERE {} = $2{}",
                column.table,
                column.column,
                column.column,
                key_conditions(column.keys, 3)
            );
            let mut query = sqlx::query(&statement).bind(resealed).bind(value);
            for key in &keys {
                query = query.bind(key);
            }
            report.resealed += query.execute(registry.pool()).await?.rows_affected();
        }
    }
    Ok(report)
}

/// How many values are still sealed under master key `key_id`: it may be retired only
/// when none is.
pub async fn count_sealed_under(registry: &Registry, key_id: &str) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    for column in COLUMNS {
        let (count,): (i64,) = sqlx::query_as(&format!(
            "SELECT COUNT(*) FROM {} WHERE {} LIKE $1",
            column.table, column.column
        ))
        .bind(sealed::like_pattern(key_id))
        .fetch_one(registry.pool())
        .await?;
        total += u64::try_from(count).unwrap_or(0);
    }
    Ok(total)
}

/// The rows of `column` whose value is not sealed under `active`, with their keys.
async fn stale(
    pool: &AnyPool,
    column: &Column,
    active: &str,
) -> Result<Vec<(Vec<String>, String)>, sqlx::Error> {
    use sqlx::Row;
    let rows = sqlx::query(&format!(
        "SELECT {}, {} FROM {} WHERE {} NOT LIKE $1",
        column.keys.join(", "),
        column.column,
        column.table,
        column.column
    ))
    .bind(sealed::like_pattern(active))
    .fetch_all(pool)
    .await?;
    rows.iter()
        .map(|row| {
            let keys = (0..column.keys.len())
                .map(|i| row.try_get::<String, _>(i))
                .collect::<Result<Vec<_>, _>>()?;
            Ok((keys, row.try_get::<String, _>(column.keys.len())?))
        })
        .collect()
}

/// ` AND k1 = $n AND k2 = $n+1 …`.
fn key_conditions(keys: &[&str], first: usize) -> String {
    keys.iter()
        .enumerate()
        .map(|(i, key)| format!(" AND {key} = ${}", first + i))
        .collect()
}

/// Opens a column's value, accepting one stored before secrets were sealed (`plain`
/// decodes it) until [`reseal_all`] has sealed it.
pub(crate) fn open_or_legacy<T>(
    sealer: &Sealer,
    context: &str,
    value: &str,
    decode: impl FnOnce(&[u8]) -> Result<T, sqlx::Error>,
) -> Result<T, sqlx::Error> {
    if sealed::key_id(value).is_none() {
        return decode(value.as_bytes());
    }
    let opened = sealer.open(context, value).map_err(sql_error)?;
    decode(&opened)
}
