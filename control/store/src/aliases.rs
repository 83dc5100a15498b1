//! Aliases: named, movable pointers to a function version, optionally sending a weighted
//! share of invocations to one more version (Lambda's weighted routing, for canaries).
//!
//! The routing column holds Lambda's `AdditionalVersionWeights` as a JSON object
//! (version → weight), so the stored form and the API form stay the same.

use std::collections::BTreeMap;

use sqlx::{Any, AnyPool, Executor};

/// The mutable version's name, the one qualifier that is neither alias nor number.
const LATEST: &str = "$LATEST";

/// Where invocations of a qualifier go.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// The version that gets the invocations the additional version does not.
    pub primary: String,
    /// A second published version and the share (0.0 ≤ weight < 1.0) it receives.
    pub additional: Option<(String, f64)>,
}

/// One alias.
#[derive(Clone, Debug, PartialEq)]
pub struct Alias {
    pub name: String,
    /// `routing.primary` is the alias's `FunctionVersion`.
    pub routing: Routing,
    pub description: String,
    /// Changes on every write, for optimistic concurrency.
    pub revision_id: String,
}

/// Raw row: name, function_version, description, routing JSON, revision_id.
type Row = (String, String, String, String, String);

const COLUMNS: &str = "name, function_version, description, routing, revision_id";

/// Whether the function has the version (`$LATEST` or a published number).
pub async fn version_exists<'e, E>(
    db: E,
    account: &str,
    function: &str,
    version: &str,
) -> Result<bool, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row: Option<(String,)> = sqlx::query_as(
        "SELECT version FROM versions \
         WHERE account_id = $1 AND function_name = $2 AND version = $3",
    )
    .bind(account)
    .bind(function)
    .bind(version)
    .fetch_optional(db)
    .await?;
    Ok(row.is_some())
}

/// Whether the account has the function.
pub async fn function_exists<'e, E>(
    db: E,
    account: &str,
    function: &str,
) -> Result<bool, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row: Option<(String,)> =
        sqlx::query_as("SELECT name FROM functions WHERE account_id = $1 AND name = $2")
            .bind(account)
            .bind(function)
            .fetch_optional(db)
            .await?;
    Ok(row.is_some())
}

/// The alias, if the function has it.
pub async fn get<'e, E>(
    db: E,
    account: &str,
    function: &str,
    name: &str,
) -> Result<Option<Alias>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM aliases WHERE account_id = $1 AND function_name = $2 AND name = $3"
    ))
    .bind(account)
    .bind(function)
    .bind(name)
    .fetch_optional(db)
    .await?;
    row.map(alias).transpose()
}

/// Up to `limit` aliases named after `after` (`""`: from the start), in name order; with
/// `version`, only those whose `FunctionVersion` it is.
pub async fn list<'e, E>(
    db: E,
    account: &str,
    function: &str,
    version: Option<&str>,
    after: &str,
    limit: i64,
) -> Result<Vec<Alias>, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM aliases WHERE account_id = $1 AND function_name = $2 \
         AND name > $3 AND ($4 = '' OR function_version = $4) ORDER BY name LIMIT $5"
    ))
    .bind(account)
    .bind(function)
    .bind(after)
    .bind(version.unwrap_or(""))
    .bind(limit)
    .fetch_all(db)
    .await?;
    rows.into_iter().map(alias).collect()
}

/// Stores a new alias (the caller has checked that the name is free).
pub async fn insert<'e, E>(
    db: E,
    account: &str,
    function: &str,
    alias: &Alias,
) -> Result<(), sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    sqlx::query(
        "INSERT INTO aliases \
             (account_id, function_name, name, function_version, description, routing, revision_id) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(account)
    .bind(function)
    .bind(&alias.name)
    .bind(&alias.routing.primary)
    .bind(&alias.description)
    .bind(weights_json(&alias.routing))
    .bind(&alias.revision_id)
    .execute(db)
    .await?;
    Ok(())
}

/// Replaces the stored alias of the same name; false when there is none.
pub async fn update<'e, E>(
    db: E,
    account: &str,
    function: &str,
    alias: &Alias,
) -> Result<bool, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let done = sqlx::query(
        "UPDATE aliases SET function_version = $1, description = $2, routing = $3, \
         revision_id = $4 WHERE account_id = $5 AND function_name = $6 AND name = $7",
    )
    .bind(&alias.routing.primary)
    .bind(&alias.description)
    .bind(weights_json(&alias.routing))
    .bind(&alias.revision_id)
    .bind(account)
    .bind(function)
    .bind(&alias.name)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Removes the alias; false when there was none.
pub async fn delete<'e, E>(
    db: E,
    account: &str,
    function: &str,
    name: &str,
) -> Result<bool, sqlx::Error>
where
    E: Executor<'e, Database = Any>,
{
    let done = sqlx::query(
        "DELETE FROM aliases WHERE account_id = $1 AND function_name = $2 AND name = $3",
    )
    .bind(account)
    .bind(function)
    .bind(name)
    .execute(db)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// The invoke path's question: where do invocations of `function:qualifier` go? A version
/// (`$LATEST` or a number) routes to itself, an alias to its versions; `None` when the
/// function has no such version or alias.
pub async fn resolve(
    pool: &AnyPool,
    account: &str,
    function: &str,
    qualifier: &str,
) -> Result<Option<Routing>, sqlx::Error> {
    if qualifier == LATEST || qualifier.bytes().all(|b| b.is_ascii_digit()) {
        let exists = version_exists(pool, account, function, qualifier).await?;
        return Ok(exists.then(|| Routing {
            primary: qualifier.to_owned(),
            additional: None,
        }));
    }
    Ok(get(pool, account, function, qualifier)
        .await?
        .map(|alias| alias.routing))
}

/// Lambda's `AdditionalVersionWeights` of a routing: empty or one entry.
pub fn weights(routing: &Routing) -> BTreeMap<String, f64> {
    routing.additional.iter().cloned().collect()
}

fn weights_json(routing: &Routing) -> String {
    serde_json::to_string(&weights(routing)).expect("a map of strings to floats serializes")
}

fn alias((name, primary, description, routing, revision_id): Row) -> Result<Alias, sqlx::Error> {
    let weights: BTreeMap<String, f64> =
        serde_json::from_str(&routing).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
    Ok(Alias {
        name,
        routing: Routing {
            primary,
            additional: weights.into_iter().next(),
        },
        description,
        revision_id,
    })
}
