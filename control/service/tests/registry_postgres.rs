//! The registry on a real PostgreSQL (a throwaway server of the test run's own, see
//! `common/postgres.rs`): its migrations, lists in the same byte order as on SQLite,
//! writers that must take turns really doing so, and the whole Lambda API lifecycle through
//! boto3 against `ember-control serve --database-url postgres://…`.

use std::collections::BTreeMap;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use ember_store::aliases::{self, NewAlias};
use ember_store::concurrency;
use ember_store::fixtures::{self, code, config, ACCOUNT};
use ember_store::functions::{self, ConfigChange};
use ember_store::{accounts, Registry};
use ember_testkit::postgres::Postgres;
use ember_testkit::Control;

/// Valid function, alias and account names whose byte order (digits, uppercase, `-`, `_`,
/// lowercase) differs from a natural-language collation's (ICU's `en-US`: `0` < `a` < `A`
/// < `a_b` < `a-b` < `ab` < `b` < `B`).
const NAMES: [&str; 8] = ["b", "B", "a-b", "a_b", "ab", "A", "a", "0"];

/// How long a writer that should be waiting for a lock gets to show it is not.
const WAIT: Duration = Duration::from_millis(300);

/// A new database on the shared server with the registry's schema and account `ACCOUNT`.
async fn registry(label: &str) -> (Arc<Postgres>, Registry) {
    let postgres = Postgres::shared();
    let keys = tempfile::tempdir().unwrap();
    let registry = Registry::open(&postgres.database(label))
        .await
        .unwrap()
        .with_sealer(fixtures::sealer(keys.path()));
    fixtures::add_account(&registry).await;
    (postgres, registry)
}

fn alias(name: &str, version: &str) -> NewAlias {
    NewAlias {
        name: name.into(),
        function_version: version.into(),
        description: String::new(),
        weights: BTreeMap::new(),
    }
}

/// Begins a transaction that holds the row lock the store's writers take first (see
/// `ember_store::database`): the account's, or with `function` the function's too.
async fn hold_locks(
    registry: &Registry,
    function: Option<&str>,
) -> sqlx::Transaction<'static, sqlx::Any> {
    let mut tx = registry.pool().begin().await.unwrap();
    match function {
        None => sqlx::query("UPDATE accounts SET name = name WHERE id = $1").bind(ACCOUNT),
        Some(name) => sqlx::query(
            "UPDATE functions SET last_version = last_version \
             WHERE account_id = $1 AND name = $2",
        )
        .bind(ACCOUNT)
        .bind(name),
    }
    .execute(&mut *tx)
    .await
    .unwrap();
    tx
}

#[tokio::test]
async fn migrations_run_once_also_when_two_instances_open_a_new_database() {
    let postgres = Postgres::shared();
    // ember-store's, next to this crate.
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../store/migrations"))
        .unwrap()
        .count() as i64;
    let url = postgres.database("migrations");
    for _ in 0..2 {
        let registry = Registry::open(&url).await.unwrap();
        let (applied,): (i64,) =
            sqlx::query_as("SELECT COUNT(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(registry.pool())
                .await
                .unwrap();
        assert_eq!(applied, migrations);
        let (functions,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM functions")
            .fetch_one(registry.pool())
            .await
            .unwrap();
        assert_eq!(functions, 0);
    }
    // Control instances sharing a database may start together.
    let url = postgres.database("migrations_at_once");
    let (first, second) = tokio::join!(Registry::open(&url), Registry::open(&url));
    first.unwrap();
    second.unwrap();
}

/// Every list the registry pages by name, read page by page (3 a page, each starting
/// after the previous page's last key, as the API's markers do): accounts, functions'
/// versions, aliases, provisioned concurrency configurations.
async fn listings(registry: &Registry) -> [Vec<String>; 4] {
    let pool = registry.pool();
    for name in NAMES {
        accounts::create(pool, name).await.unwrap();
        functions::create(
            registry,
            ACCOUNT,
            name,
            &config(),
            &code(name),
            true,
            u64::MAX,
        )
        .await
        .unwrap();
    }
    for name in NAMES {
        aliases::create(pool, ACCOUNT, "a", alias(name, "1"))
            .await
            .unwrap();
        // Inserted as they are: `0` (a version number no function has) would be refused.
        sqlx::query(
            "INSERT INTO provisioned_concurrency \
                 (account_id, function_name, qualifier, requested, last_modified) \
             VALUES ($1, 'a', $2, 1, '')",
        )
        .bind(ACCOUNT)
        .bind(name)
        .execute(pool)
        .await
        .unwrap();
    }
    let accounts = accounts::list(pool)
        .await
        .unwrap()
        .into_iter()
        .map(|account| account.name)
        .filter(|name| name != "owner")
        .collect();

    let mut versions: Vec<String> = Vec::new();
    let mut after: Option<(String, i64)> = None;
    loop {
        let after_key = after.as_ref().map(|(name, seq)| (name.as_str(), *seq));
        let page = functions::list(registry, ACCOUNT, after_key, 3, true)
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.function_name.clone(), last.seq));
        versions.extend(
            page.iter()
                .map(|v| format!("{}:{}", v.function_name, v.version)),
        );
    }

    let mut alias_names: Vec<String> = Vec::new();
    loop {
        let after = alias_names.last().cloned().unwrap_or_default();
        let page = aliases::list(pool, ACCOUNT, "a", None, &after, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        alias_names.extend(page.into_iter().map(|alias| alias.name));
    }

    let mut qualifiers: Vec<String> = Vec::new();
    loop {
        let after = qualifiers.last().cloned().unwrap_or_default();
        let page = concurrency::list_provisioned(pool, ACCOUNT, "a", &after, 3)
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        qualifiers.extend(page.into_iter().map(|config| config.qualifier));
    }
    [accounts, versions, alias_names, qualifiers]
}

#[tokio::test]
async fn lists_sort_and_page_in_byte_order_as_on_sqlite() {
    let (postgres, registry) = registry("listings").await;
    if postgres.major >= 15 {
        // Otherwise the test would prove nothing: the database's own order is not bytes'.
        let (natural,): (bool,) = sqlx::query_as("SELECT 'a' < 'B'")
            .fetch_one(registry.pool())
            .await
            .unwrap();
        assert!(
            natural,
            "the test cluster's default collation sorts by bytes"
        );
    }
    let mut names: Vec<String> = NAMES.iter().map(|&n| n.to_owned()).collect();
    names.sort(); // Rust compares strings by their bytes.
    let versions = names
        .iter()
        .flat_map(|name| [format!("{name}:$LATEST"), format!("{name}:1")])
        .collect();
    let expected = [names.clone(), versions, names.clone(), names];

    assert_eq!(listings(&registry).await, expected, "on PostgreSQL");

    let dir = tempfile::tempdir().unwrap();
    let sqlite = Registry::open_sqlite(dir.path())
        .await
        .unwrap()
        .with_sealer(fixtures::sealer(dir.path()));
    fixtures::add_account(&sqlite).await;
    assert_eq!(listings(&sqlite).await, expected, "on SQLite");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn writers_of_one_function_take_turns() {
    let (_postgres, registry) = registry("writers").await;
    functions::create(
        &registry,
        ACCOUNT,
        "f",
        &config(),
        &code("a"),
        false,
        u64::MAX,
    )
    .await
    .unwrap();
    let update = |registry: &Registry, timeout: i64| {
        let registry = registry.clone();
        async move {
            let change = ConfigChange {
                timeout: Some(timeout),
                ..ConfigChange::default()
            };
            functions::update_config(&registry, ACCOUNT, "f", &change, None).await
        }
    };

    // A transaction holding the function's lock holds up every other writer of it.
    let holder = hold_locks(&registry, Some("f")).await;
    let waiting = tokio::spawn(update(&registry, 30));
    tokio::time::sleep(WAIT).await;
    assert!(!waiting.is_finished(), "a writer did not wait for the lock");
    holder.commit().await.unwrap();
    assert_eq!(waiting.await.unwrap().unwrap().config.timeout, 30);

    // Eight writers at once, each changing `$LATEST` and publishing it.
    let writers: Vec<_> = (1..=8)
        .map(|timeout| {
            let update = update(&registry, timeout);
            let registry = registry.clone();
            tokio::spawn(async move {
                update.await?;
                functions::publish(&registry, ACCOUNT, "f", None, None, None).await
            })
        })
        .collect();
    let mut published = Vec::new();
    for writer in writers {
        published.push(writer.await.unwrap().unwrap());
    }
    // Every write committed; the versions are numbered without gaps, each freezing a
    // configuration one of the writers set.
    let versions = functions::list_versions(&registry, ACCOUNT, "f", 0, 100)
        .await
        .unwrap();
    let numbers: Vec<i64> = versions.iter().map(|v| v.seq).collect();
    assert!(!numbers.is_empty());
    assert_eq!(numbers, (1..=numbers.len() as i64).collect::<Vec<_>>());
    for version in &versions {
        assert!((1..=8).contains(&version.config.timeout), "{version:?}");
    }
    for version in &published {
        assert!(versions.contains(version), "{version:?}");
    }
    let function = functions::get_function(&registry, ACCOUNT, "f")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(function.last_version, numbers.len() as i64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deletes_and_alias_and_concurrency_writers_take_turns() {
    let (_postgres, registry) = registry("deletes").await;
    for (name, artifact) in [("f", "a"), ("g", "b")] {
        functions::create(
            &registry,
            ACCOUNT,
            name,
            &config(),
            &code(artifact),
            true,
            u64::MAX,
        )
        .await
        .unwrap();
    }

    // CreateAlias checks the version exists, then adds the alias; DeleteFunction of that
    // version checks no alias routes to it, then deletes it. Both wait for the account's
    // lock, so one runs after the other and an alias never points at nothing.
    let holder = hold_locks(&registry, None).await;
    let create = {
        let registry = registry.clone();
        tokio::spawn(async move {
            aliases::create(registry.pool(), ACCOUNT, "f", alias("live", "1")).await
        })
    };
    tokio::time::sleep(WAIT).await;
    assert!(
        !create.is_finished(),
        "CreateAlias did not wait for the lock"
    );
    let delete = {
        let registry = registry.clone();
        tokio::spawn(async move { functions::delete_version(&registry, ACCOUNT, "f", "1").await })
    };
    tokio::time::sleep(WAIT).await;
    assert!(
        !delete.is_finished(),
        "DeleteFunction did not wait for the lock"
    );
    holder.commit().await.unwrap();
    let (created, deleted) = (create.await.unwrap(), delete.await.unwrap());
    let version = functions::get_version(&registry, ACCOUNT, "f", "1")
        .await
        .unwrap();
    let routing = aliases::resolve(registry.pool(), ACCOUNT, "f", "live")
        .await
        .unwrap();
    match (created, deleted) {
        (Ok(alias), Err(functions::Error::InUse(users))) => {
            assert_eq!(users, [alias.name]);
            assert!(version.is_some() && routing.is_some());
        }
        (Err(aliases::Error::VersionNotFound(v)), Ok(freed)) => {
            assert_eq!((v.as_str(), freed), ("1", Vec::<String>::new()));
            assert!(version.is_none() && routing.is_none());
        }
        other => panic!("CreateAlias and DeleteFunction of its version: {other:?}"),
    }

    // PutProvisionedConcurrencyConfig against deleting the whole function: whichever
    // comes second finds what the first left, and no configuration outlives its function.
    let holder = hold_locks(&registry, None).await;
    let put = {
        let registry = registry.clone();
        tokio::spawn(async move {
            concurrency::put_provisioned(registry.pool(), ACCOUNT, "g", "1", 2).await
        })
    };
    tokio::time::sleep(WAIT).await;
    assert!(
        !put.is_finished(),
        "PutProvisionedConcurrencyConfig did not wait"
    );
    let delete = {
        let registry = registry.clone();
        tokio::spawn(async move { functions::delete_function(&registry, ACCOUNT, "g").await })
    };
    tokio::time::sleep(WAIT).await;
    assert!(!delete.is_finished(), "DeleteFunction did not wait");
    holder.commit().await.unwrap();
    match put.await.unwrap() {
        Ok(config) => assert_eq!(config.requested, 2),
        Err(concurrency::Error::FunctionNotFound) => {}
        Err(e) => panic!("PutProvisionedConcurrencyConfig: {e}"),
    }
    assert_eq!(delete.await.unwrap().unwrap(), ["b"]);
    let (left,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM provisioned_concurrency")
        .fetch_one(registry.pool())
        .await
        .unwrap();
    assert_eq!(left, 0);
}

#[test]
fn boto3_drives_the_whole_lifecycle_on_postgres() {
    let postgres = Postgres::shared();
    let url = postgres.database("lifecycle");
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let control = Control::start_with(&data, &["--database-url", &url]);

    // The operator's command needs the same database URL as the service.
    let out = Command::new(ember_testkit::binaries::binary(
        "ember-control",
        "ember-control",
    ))
    .args(["account", "create", "other", "--data-dir"])
    .arg(&data)
    .args(["--database-url", &url])
    .output()
    .expect("run ember-control account create");
    assert!(
        out.status.success(),
        "account create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let credentials = dir.path().join("credentials");
    let mut profiles = std::fs::read(control.credentials()).unwrap();
    profiles.push(b'\n');
    profiles.extend_from_slice(&out.stdout);
    std::fs::write(&credentials, profiles).unwrap();

    control.boto3_lifecycle(&credentials, "other", dir.path());

    // It all went to PostgreSQL: no SQLite file, and the functions the script left (its
    // paging ones) are in the database.
    assert!(!data.join(ember_store::DB_FILE).exists());
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let left = runtime.block_on(async {
        // The service's master keys, in its data directory.
        let registry = Registry::open(&url)
            .await
            .unwrap()
            .with_sealer(fixtures::sealer(&data));
        let admin = accounts::by_name(registry.pool(), "admin")
            .await
            .unwrap()
            .unwrap();
        let other = accounts::by_name(registry.pool(), "other").await.unwrap();
        assert!(other.is_some());
        functions::list(&registry, &admin.id, None, 100, false)
            .await
            .unwrap()
    });
    let names: Vec<&str> = left.iter().map(|v| v.function_name.as_str()).collect();
    let expected: Vec<String> = (0..11).map(|i| format!("page-{i:02}")).collect();
    assert_eq!(names, expected);
}
