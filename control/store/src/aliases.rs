//! Aliases: named, movable pointers to a function version, optionally sending a weighted
//! share of invocations to one more version (Lambda's weighted routing, for canaries).
//!
//! The routing column holds Lambda's `AdditionalVersionWeights` as a JSON object
//! (version → weight), so the stored form and the API form stay the same.
//!
//! Each write runs in a transaction that first takes the account's lock (see
//! [`crate::database`]): an alias routes only to versions that exist, and deleting a
//! version takes the same lock, so it cannot slip in between that check and the write.
//! Provisioned concurrency (the `concurrency` module, which builds on this one) can be
//! configured for an alias: an alias that has a configuration moves only where a new one
//! could go ([`ProvisionedRoutingError`]), and deleting the alias deletes it, as Lambda
//! does. Those rows are read and deleted here in plain SQL, as a function's delete does.

use std::collections::BTreeMap;

use sqlx::{AnyConnection, AnyPool};

use crate::database::lock_account;
use crate::functions;
use ember_core::names::LATEST;

/// Longest version number a routing may name (Lambda's limit on the request member).
pub const MAX_VERSION: usize = 1024;

/// Where invocations of a qualifier go.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    /// The version that gets the invocations the additional version does not.
    pub primary: String,
    /// A second published version and the share (0.0 ≤ weight < 1.0) it receives.
    pub additional: Option<(String, f64)>,
}

impl Routing {
    /// Every version the routing sends invocations to, the primary first.
    pub fn versions(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.primary.as_str())
            .chain(self.additional.as_ref().map(|(v, _)| v.as_str()))
    }
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

/// A new alias as asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct NewAlias {
    pub name: String,
    /// `$LATEST` or a published version's number.
    pub function_version: String,
    pub description: String,
    /// Lambda's `AdditionalVersionWeights`: at most one more version and its share.
    pub weights: BTreeMap<String, f64>,
}

/// Changes to an alias; `None` leaves a part as it is. The result must satisfy the same
/// rules as a new alias, whichever parts changed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AliasChange {
    pub function_version: Option<String>,
    pub description: Option<String>,
    /// New `AdditionalVersionWeights` (empty: route to the primary alone).
    pub weights: Option<BTreeMap<String, f64>>,
    /// The alias's revision the caller expects, if any.
    pub revision_id: Option<String>,
}

/// Why a routing breaks Lambda's rules, on the routing alone. Checked in this order.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum RoutingError {
    #[error("more than one additional version")]
    TooManyVersions,
    /// A weight of 1.0 would leave the primary version nothing.
    #[error("additional version {version}'s weight {weight} is not from 0.0 up to 1.0")]
    WeightOutOfRange { version: String, weight: f64 },
    #[error("version {0} is both the primary and the additional version")]
    AdditionalIsPrimary(String),
    #[error("an alias to $LATEST routes to no other version")]
    FromLatest,
    #[error("additional version {version:?} (weight {weight}) is not a version number")]
    NotAVersion { version: String, weight: f64 },
}

/// Why a routing cannot take provisioned concurrency: what an alias with a configuration
/// must keep, and a new configuration for an alias or version must meet.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProvisionedRoutingError {
    /// It leads to `$LATEST`, which is never provisioned.
    #[error("provisioned concurrency applies to published versions only")]
    Unpublished,
    /// Each environment counts once: not through an alias and its version both.
    #[error("a version it routes to has provisioned concurrency of its own")]
    VersionProvisioned,
}

/// Why an alias operation was refused.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the function does not exist")]
    FunctionNotFound,
    #[error("the function has no version {0}")]
    VersionNotFound(String),
    #[error("the function has no alias {0}")]
    AliasNotFound(String),
    #[error("the function has an alias {0} already")]
    AliasExists(String),
    #[error("the revision id does not match")]
    RevisionMismatch,
    #[error(transparent)]
    Routing(#[from] RoutingError),
    #[error("the alias has provisioned concurrency: {0}")]
    Provisioned(#[from] ProvisionedRoutingError),
    #[error(transparent)]
    Sql(#[from] sqlx::Error),
}

/// Raw row: name, function_version, description, routing JSON, revision_id.
type Row = (String, String, String, String, String);

const COLUMNS: &str = "name, function_version, description, routing, revision_id";

/// Creates alias `new.name` of the function, routing to versions that exist.
pub async fn create(
    pool: &AnyPool,
    account: &str,
    function: &str,
    new: NewAlias,
) -> Result<Alias, Error> {
    let alias = Alias {
        routing: routing(new.function_version, &new.weights)?,
        name: new.name,
        description: new.description,
        revision_id: new_revision(),
    };
    let mut tx = pool.begin().await?;
    lock_account(&mut tx, account).await?;
    functions::require(&mut tx, account, function, Error::FunctionNotFound).await?;
    check_versions(&mut tx, account, function, &alias.routing).await?;
    if fetch(&mut tx, account, function, &alias.name)
        .await?
        .is_some()
    {
        return Err(Error::AliasExists(alias.name));
    }
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
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(alias)
}

/// Applies `change` to alias `name`; returns the alias as now stored.
pub async fn update(
    pool: &AnyPool,
    account: &str,
    function: &str,
    name: &str,
    change: AliasChange,
) -> Result<Alias, Error> {
    let mut tx = pool.begin().await?;
    lock_account(&mut tx, account).await?;
    functions::require(&mut tx, account, function, Error::FunctionNotFound).await?;
    let mut alias = fetch(&mut tx, account, function, name)
        .await?
        .ok_or_else(|| Error::AliasNotFound(name.to_owned()))?;
    if change
        .revision_id
        .is_some_and(|expected| expected != alias.revision_id)
    {
        return Err(Error::RevisionMismatch);
    }
    let primary = change
        .function_version
        .unwrap_or_else(|| alias.routing.primary.clone());
    let weights = change.weights.unwrap_or_else(|| weights(&alias.routing));
    alias.routing = routing(primary, &weights)?;
    if let Some(description) = change.description {
        alias.description = description;
    }
    alias.revision_id = new_revision();
    check_versions(&mut tx, account, function, &alias.routing).await?;
    let provisioned = provisioned_qualifiers(&mut tx, account, function).await?;
    if provisioned.contains(&alias.name) {
        check_provisioned(&alias.routing, |q| provisioned.iter().any(|p| p == q))?;
    }
    sqlx::query(
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
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(alias)
}

/// Deletes alias `name` and its provisioned concurrency.
pub async fn delete(
    pool: &AnyPool,
    account: &str,
    function: &str,
    name: &str,
) -> Result<(), Error> {
    let mut tx = pool.begin().await?;
    lock_account(&mut tx, account).await?;
    functions::require(&mut tx, account, function, Error::FunctionNotFound).await?;
    let done = sqlx::query(
        "DELETE FROM aliases WHERE account_id = $1 AND function_name = $2 AND name = $3",
    )
    .bind(account)
    .bind(function)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    if done.rows_affected() == 0 {
        return Err(Error::AliasNotFound(name.to_owned()));
    }
    // An alias's provisioned concurrency goes with it, as in Lambda.
    sqlx::query(
        "DELETE FROM provisioned_concurrency \
         WHERE account_id = $1 AND function_name = $2 AND qualifier = $3",
    )
    .bind(account)
    .bind(function)
    .bind(name)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Alias `name` of the function.
pub async fn get(
    pool: &AnyPool,
    account: &str,
    function: &str,
    name: &str,
) -> Result<Alias, Error> {
    let mut conn = pool.acquire().await?;
    functions::require(&mut conn, account, function, Error::FunctionNotFound).await?;
    fetch(&mut conn, account, function, name)
        .await?
        .ok_or_else(|| Error::AliasNotFound(name.to_owned()))
}

/// Up to `limit` of the function's aliases named after `after` (`""`: from the start), in
/// name order; with `version`, only those whose `FunctionVersion` it is.
pub async fn list(
    pool: &AnyPool,
    account: &str,
    function: &str,
    version: Option<&str>,
    after: &str,
    limit: i64,
) -> Result<Vec<Alias>, Error> {
    let mut conn = pool.acquire().await?;
    functions::require(&mut conn, account, function, Error::FunctionNotFound).await?;
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM aliases WHERE account_id = $1 AND function_name = $2 \
         AND name > $3 AND ($4 = '' OR function_version = $4) ORDER BY name LIMIT $5"
    ))
    .bind(account)
    .bind(function)
    .bind(after)
    .bind(version.unwrap_or(""))
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(alias).collect::<Result<_, _>>()?)
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
    let mut conn = pool.acquire().await?;
    if qualifier == LATEST || functions::is_number(qualifier) {
        let exists = functions::has_version(&mut conn, account, function, qualifier).await?;
        return Ok(exists.then(|| Routing {
            primary: qualifier.to_owned(),
            additional: None,
        }));
    }
    Ok(fetch(&mut conn, account, function, qualifier)
        .await?
        .map(|alias| alias.routing))
}

/// Lambda's `AdditionalVersionWeights` of a routing: empty or one entry.
pub fn weights(routing: &Routing) -> BTreeMap<String, f64> {
    routing.additional.iter().cloned().collect()
}

/// The alias, if the function has it; inside the caller's transaction.
pub(crate) async fn fetch(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
    name: &str,
) -> Result<Option<Alias>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM aliases WHERE account_id = $1 AND function_name = $2 AND name = $3"
    ))
    .bind(account)
    .bind(function)
    .bind(name)
    .fetch_optional(conn)
    .await?;
    row.map(alias).transpose()
}

/// Provisioned concurrency's rule for a routing that has (or is to get) a configuration:
/// published versions only, none of them with a configuration of its own
/// (`is_provisioned` tells which qualifiers of the function have one).
pub(crate) fn check_provisioned(
    routing: &Routing,
    is_provisioned: impl Fn(&str) -> bool,
) -> Result<(), ProvisionedRoutingError> {
    if routing.primary == LATEST {
        return Err(ProvisionedRoutingError::Unpublished);
    }
    if routing.versions().any(is_provisioned) {
        return Err(ProvisionedRoutingError::VersionProvisioned);
    }
    Ok(())
}

/// Lambda's routing rules: at most one additional version, a published one other than
/// the primary, with a weight from 0.0 up to (not including) 1.0; and no routing from
/// `$LATEST`.
fn routing(primary: String, weights: &BTreeMap<String, f64>) -> Result<Routing, RoutingError> {
    if weights.len() > 1 {
        return Err(RoutingError::TooManyVersions);
    }
    let Some((version, &weight)) = weights.iter().next() else {
        return Ok(Routing {
            primary,
            additional: None,
        });
    };
    if !(0.0..1.0).contains(&weight) {
        return Err(RoutingError::WeightOutOfRange {
            version: version.clone(),
            weight,
        });
    }
    if *version == primary {
        return Err(RoutingError::AdditionalIsPrimary(primary));
    }
    if primary == LATEST {
        return Err(RoutingError::FromLatest);
    }
    if version.len() > MAX_VERSION || !functions::is_number(version) {
        return Err(RoutingError::NotAVersion {
            version: version.clone(),
            weight,
        });
    }
    Ok(Routing {
        primary,
        additional: Some((version.clone(), weight)),
    })
}

/// `VersionNotFound` unless every version `routing` names exists.
async fn check_versions(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
    routing: &Routing,
) -> Result<(), Error> {
    for version in routing.versions() {
        if !functions::has_version(conn, account, function, version).await? {
            return Err(Error::VersionNotFound(version.to_owned()));
        }
    }
    Ok(())
}

/// The qualifiers of the function's provisioned concurrency configurations.
async fn provisioned_qualifiers(
    conn: &mut AnyConnection,
    account: &str,
    function: &str,
) -> Result<Vec<String>, sqlx::Error> {
    let rows: Vec<(String,)> = sqlx::query_as(
        "SELECT qualifier FROM provisioned_concurrency WHERE account_id = $1 AND function_name = $2",
    )
    .bind(account)
    .bind(function)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|(q,)| q).collect())
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::concurrency;
    use crate::fixtures::{self, ACCOUNT};

    fn new(name: &str, version: &str, weights: &[(&str, f64)]) -> NewAlias {
        NewAlias {
            name: name.into(),
            function_version: version.into(),
            description: String::new(),
            weights: weights.iter().map(|&(v, w)| (v.to_owned(), w)).collect(),
        }
    }

    #[test]
    fn routing_rules_in_lambdas_order() {
        let one = |v: &str, w: f64| BTreeMap::from([(v.to_owned(), w)]);
        let plain = routing("1".into(), &BTreeMap::new()).unwrap();
        assert_eq!(plain.versions().collect::<Vec<_>>(), ["1"]);
        let weighted = routing("1".into(), &one("2", 0.0)).unwrap();
        assert_eq!(weighted.additional, Some(("2".into(), 0.0)));
        assert_eq!(weighted.versions().collect::<Vec<_>>(), ["1", "2"]);
        assert!(routing("1".into(), &one("2", 0.999)).is_ok());
        assert!(routing(LATEST.into(), &BTreeMap::new()).is_ok());
        let out_of_range = |v: &str, weight| RoutingError::WeightOutOfRange {
            version: v.into(),
            weight,
        };
        for (primary, weights, expected) in [
            ("1", one("2", 1.0), out_of_range("2", 1.0)),
            ("1", one("2", -0.1), out_of_range("2", -0.1)),
            (
                "1",
                one("1", 0.5),
                RoutingError::AdditionalIsPrimary("1".into()),
            ),
            (LATEST, one("2", 0.5), RoutingError::FromLatest),
            // The weight is checked before the version, the primary before its pattern.
            (LATEST, one("x", 1.5), out_of_range("x", 1.5)),
            (
                "1",
                one(LATEST, 0.5),
                RoutingError::NotAVersion {
                    version: LATEST.into(),
                    weight: 0.5,
                },
            ),
            (
                "1",
                one(&"9".repeat(MAX_VERSION + 1), 0.5),
                RoutingError::NotAVersion {
                    version: "9".repeat(MAX_VERSION + 1),
                    weight: 0.5,
                },
            ),
            (
                "1",
                BTreeMap::from([("2".into(), 0.1), ("3".into(), 7.0)]),
                RoutingError::TooManyVersions,
            ),
        ] {
            assert_eq!(
                routing(primary.into(), &weights),
                Err(expected),
                "{primary} {weights:?}"
            );
        }
    }

    #[tokio::test]
    async fn writes_check_the_function_versions_and_revision() {
        let (_dir, registry) = fixtures::registry().await;
        let pool = registry.pool();
        fixtures::function(&registry, "f", 2).await;

        let live = create(pool, ACCOUNT, "f", new("live", "1", &[]))
            .await
            .unwrap();
        assert_eq!(get(pool, ACCOUNT, "f", "live").await.unwrap(), live);
        assert!(matches!(
            create(pool, ACCOUNT, "f", new("live", "2", &[])).await,
            Err(Error::AliasExists(name)) if name == "live"
        ));
        assert!(matches!(
            create(pool, ACCOUNT, "f", new("next", "1", &[("3", 0.5)])).await,
            Err(Error::VersionNotFound(version)) if version == "3"
        ));
        assert!(matches!(
            create(pool, ACCOUNT, "g", new("live", "1", &[])).await,
            Err(Error::FunctionNotFound)
        ));
        assert!(matches!(
            create(pool, ACCOUNT, "f", new("next", "1", &[("1", 0.5)])).await,
            Err(Error::Routing(RoutingError::AdditionalIsPrimary(_)))
        ));

        let stale = AliasChange {
            description: Some("canary".into()),
            revision_id: Some("not the revision".into()),
            ..AliasChange::default()
        };
        assert!(matches!(
            update(pool, ACCOUNT, "f", "live", stale).await,
            Err(Error::RevisionMismatch)
        ));
        let canary = AliasChange {
            description: Some("canary".into()),
            weights: Some(BTreeMap::from([("2".into(), 0.25)])),
            revision_id: Some(live.revision_id.clone()),
            ..AliasChange::default()
        };
        let moved = update(pool, ACCOUNT, "f", "live", canary).await.unwrap();
        assert_eq!(moved.routing.additional, Some(("2".into(), 0.25)));
        assert_eq!(moved.description, "canary");
        assert_ne!(moved.revision_id, live.revision_id);
        // What stays must still hold with what changes: `$LATEST` takes no weights.
        let to_latest = AliasChange {
            function_version: Some(LATEST.into()),
            ..AliasChange::default()
        };
        assert!(matches!(
            update(pool, ACCOUNT, "f", "live", to_latest).await,
            Err(Error::Routing(RoutingError::FromLatest))
        ));
        assert_eq!(get(pool, ACCOUNT, "f", "live").await.unwrap(), moved);
        assert!(matches!(
            update(pool, ACCOUNT, "f", "gone", AliasChange::default()).await,
            Err(Error::AliasNotFound(name)) if name == "gone"
        ));

        let listed = list(pool, ACCOUNT, "f", Some("1"), "", 10).await.unwrap();
        assert_eq!(listed, [moved]);
        assert!(matches!(
            list(pool, ACCOUNT, "g", None, "", 10).await,
            Err(Error::FunctionNotFound)
        ));
        delete(pool, ACCOUNT, "f", "live").await.unwrap();
        assert!(matches!(
            delete(pool, ACCOUNT, "f", "live").await,
            Err(Error::AliasNotFound(_))
        ));
        assert_eq!(resolve(pool, ACCOUNT, "f", "live").await.unwrap(), None);
    }

    #[tokio::test]
    async fn a_provisioned_alias_keeps_provisioned_concurrencys_rule() {
        let (_dir, registry) = fixtures::registry().await;
        let pool = registry.pool();
        fixtures::function(&registry, "f", 3).await;
        create(pool, ACCOUNT, "f", new("live", "1", &[]))
            .await
            .unwrap();
        concurrency::put_provisioned(pool, ACCOUNT, "f", "live", 2)
            .await
            .unwrap();
        concurrency::put_provisioned(pool, ACCOUNT, "f", "3", 1)
            .await
            .unwrap();
        let to = |version: &str| AliasChange {
            function_version: Some(version.into()),
            ..AliasChange::default()
        };
        assert!(matches!(
            update(pool, ACCOUNT, "f", "live", to("3")).await,
            Err(Error::Provisioned(
                ProvisionedRoutingError::VersionProvisioned
            ))
        ));
        assert!(matches!(
            update(pool, ACCOUNT, "f", "live", to(LATEST)).await,
            Err(Error::Provisioned(ProvisionedRoutingError::Unpublished))
        ));
        update(pool, ACCOUNT, "f", "live", to("2")).await.unwrap();
        // An alias without a configuration may go anywhere.
        create(pool, ACCOUNT, "f", new("edge", "1", &[]))
            .await
            .unwrap();
        update(pool, ACCOUNT, "f", "edge", to("3")).await.unwrap();

        // The alias's configuration goes with it.
        delete(pool, ACCOUNT, "f", "live").await.unwrap();
        let left = concurrency::list_provisioned(pool, ACCOUNT, "f", "", 10)
            .await
            .unwrap();
        let qualifiers: Vec<&str> = left.iter().map(|c| c.qualifier.as_str()).collect();
        assert_eq!(qualifiers, ["3"]);
    }
}
