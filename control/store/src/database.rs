//! The database every store module queries: opening it, its migrations and its pool.
//!
//! SQLite (one file in the data directory) is the default; a `postgres://` URL makes
//! PostgreSQL the backend, so several control instances can share state. Both go through
//! sqlx's `Any` driver with the same portable statements (`$1` placeholders, BIGINT
//! integers, TEXT for JSON) and the same migrations in `control/store/migrations/`.
//!
//! Listed names sort in byte order on both: their columns are `COLLATE "binary"`, SQLite's
//! built-in byte-wise collation, which [`Registry::open`] first creates on PostgreSQL
//! (there a database's default collation follows its locale, e.g. `a` < `B` in `en_US`).
//!
//! Every public store function takes the pool (or the [`Registry`] around it) and owns
//! its transaction: it begins it, takes its locks, checks what it must, writes and
//! commits; a write of one statement is a transaction by itself. Callers get a result or
//! the module's typed error, never a transaction to finish.
//!
//! Writes that check rows before changing others serialise on a row lock taken by their
//! transaction's first statement, a no-op `UPDATE` of the account's row
//! ([`lock_account`]) or the function's ([`lock_function`]), account first when both.
//! Function writes (module `functions`) take the function's; alias and concurrency writes
//! (modules `aliases` and `concurrency`), whose rules span the account's functions, take
//! the account's; deletes of functions and versions take both, since what they delete is
//! what alias and concurrency writers check. On SQLite the first write of a transaction
//! takes the database's only write lock, which serialises every writer (taking it before
//! anything is read: a transaction that read first may find, when it writes, that
//! another writer committed since its snapshot, and fail); PostgreSQL locks just that
//! row, so writers that take different locks run side by side under READ COMMITTED: each
//! statement after the lock sees every write committed before it, but two writers that
//! must exclude each other have to share a lock.

use std::path::Path;
use std::str::FromStr;
use std::sync::Arc;

use ember_core::sealed::Sealer;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{AnyConnection, AnyPool, ConnectOptions};

/// The SQLite file's name inside the data directory.
pub const DB_FILE: &str = "registry.db";

/// Why the registry could not be opened or used.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("database: {0}")]
    Sql(#[from] sqlx::Error),
    #[error("database migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// The connection pool every store module queries through, and the sealer of the secrets
/// it keeps (`crate::sealing`).
#[derive(Clone, Debug)]
pub struct Registry {
    pool: AnyPool,
    sealer: Option<Arc<Sealer>>,
}

impl Registry {
    /// Opens `url` (`sqlite://…` or `postgres://…`) and brings its schema up to date.
    pub async fn open(url: &str) -> Result<Registry, RegistryError> {
        sqlx::any::install_default_drivers();
        let sqlite = url.starts_with("sqlite:");
        let options = AnyConnectOptions::from_str(url)?.disable_statement_logging();
        let pool = AnyPoolOptions::new()
            .max_connections(if sqlite { 4 } else { 16 })
            .after_connect(move |conn, _| {
                Box::pin(async move {
                    if sqlite {
                        // WAL lets readers run beside the one writer; foreign keys make
                        // deletes cascade; a busy writer is waited for, not an error.
                        for pragma in [
                            "PRAGMA journal_mode = WAL",
                            "PRAGMA foreign_keys = ON",
                            "PRAGMA busy_timeout = 10000",
                            "PRAGMA synchronous = FULL",
                        ] {
                            sqlx::query(pragma).execute(&mut *conn).await?;
                        }
                    }
                    Ok(())
                })
            })
            .connect_with(options)
            .await?;
        if !sqlite {
            create_binary_collation(&pool).await?;
        }
        sqlx::migrate!("./migrations").run(&pool).await?;
        Ok(Registry { pool, sealer: None })
    }

    /// This registry, sealing and opening its secrets with `sealer`. Without one, reading
    /// or writing a secret (an access key, a function's variables, an event) is an error.
    pub fn with_sealer(mut self, sealer: Arc<Sealer>) -> Registry {
        self.sealer = Some(sealer);
        self
    }

    /// The sealer, for the store modules that keep secrets.
    pub(crate) fn sealer(&self) -> Result<&Sealer, sqlx::Error> {
        self.sealer.as_deref().ok_or_else(|| {
            sqlx::Error::Configuration(
                "the registry was opened without master keys, so it cannot keep secrets".into(),
            )
        })
    }

    /// Opens (creating if needed) the SQLite registry in `data_dir`, readable by its owner
    /// only: it holds the accounts' secret keys.
    pub async fn open_sqlite(data_dir: &Path) -> Result<Registry, RegistryError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            use std::os::unix::fs::OpenOptionsExt;
            std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .open(&path)?;
        }
        Registry::open(&format!("sqlite://{}?mode=rwc", path.display())).await
    }

    /// The pool, for the store modules.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }
}

/// Starts serializing the caller's transaction against every other transaction that
/// locks `account`: a no-op write to the account's row. The first statement of the
/// transaction, it takes SQLite's single writer lock, or the row's lock in PostgreSQL,
/// before anything is read.
pub(crate) async fn lock_account(
    conn: &mut AnyConnection,
    account: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE accounts SET name = name WHERE id = $1")
        .bind(account)
        .execute(conn)
        .await?;
    Ok(())
}

/// Takes the function's row lock as a transaction's first statement (after the account's
/// lock, if it takes that too); false if the function does not exist.
pub(crate) async fn lock_function(
    conn: &mut AnyConnection,
    account: &str,
    name: &str,
) -> Result<bool, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE functions SET last_version = last_version WHERE account_id = $1 AND name = $2",
    )
    .bind(account)
    .bind(name)
    .execute(conn)
    .await?;
    Ok(done.rows_affected() > 0)
}

/// Creates PostgreSQL's counterpart of SQLite's `BINARY` collation, which the migrations
/// give the name columns: `"binary"` in the current schema (where the migrations create
/// their tables), the C locale's byte-wise order. A no-op when it exists.
async fn create_binary_collation(pool: &AnyPool) -> Result<(), sqlx::Error> {
    // Checked first rather than `IF NOT EXISTS`, whose notice every start would log.
    // Two instances opening a new database at once can both find it missing: the loser's
    // `CREATE` fails (the catalog's unique index waits for the winner's commit), and the
    // second look finds the winner's.
    for attempt in 0..2 {
        let (found,): (i64,) = sqlx::query_as(
            "SELECT COUNT(*) FROM pg_collation c JOIN pg_namespace n ON n.oid = c.collnamespace \
             WHERE c.collname = 'binary' AND n.nspname = current_schema()",
        )
        .fetch_one(pool)
        .await?;
        if found > 0 {
            return Ok(());
        }
        match sqlx::query(r#"CREATE COLLATION "binary" (provider = libc, locale = 'C')"#)
            .execute(pool)
            .await
        {
            Ok(_) => return Ok(()),
            Err(sqlx::Error::Database(_)) if attempt == 0 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn opens_migrates_and_reopens_sqlite_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        for _ in 0..2 {
            let registry = Registry::open_sqlite(dir.path()).await.unwrap();
            let (count,): (i64,) = sqlx::query_as("SELECT COUNT(*) FROM functions")
                .fetch_one(registry.pool())
                .await
                .unwrap();
            assert_eq!(count, 0);
        }
        let mode = std::fs::metadata(dir.path().join(DB_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
    }
}
