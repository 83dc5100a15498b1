//! Operator commands that both binaries offer: `ember-control keys …` and `ember keys …`
//! ([`keys::KeysCommand`]), `ember-control worker …` and `ember worker …`
//! ([`worker::WorkerCommand`]), `ember-control account …` ([`account::AccountCommand`]). They
//! work on a data directory directly, beside a running service: the keyring, the artifact
//! store and SQLite (WAL) all take care of concurrent processes.

pub mod account;
pub mod keys;
pub mod worker;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;

use ember_core::artifacts::ArtifactError;
use ember_core::keys::{KeyError, KeySource, Keyring, ENV_VAR};
use ember_core::sealed::Sealer;
use ember_store::accounts::AccountError;
use ember_store::{Registry, RegistryError, DB_FILE};

/// The data directory.
#[derive(Args, Clone, Debug)]
pub struct DataDirArgs {
    /// The service's data directory (registry, keys, artifacts, TLS).
    #[arg(long, value_name = "DIR", env = "EMBER_DATA_DIR")]
    pub data_dir: PathBuf,
}

/// Where the master keys come from (default: `DIR/keys/master.json`).
#[derive(Args, Clone, Debug, Default)]
pub struct MasterKeyArgs {
    /// Read the master keys from FILE (base64 keys, oldest first) instead of the data
    /// directory.
    #[arg(long, value_name = "FILE", conflicts_with = "master_key_env")]
    pub master_key_file: Option<PathBuf>,
    /// Read the master keys from the EMBER_MASTER_KEY environment variable.
    #[arg(long)]
    pub master_key_env: bool,
}

impl MasterKeyArgs {
    /// The key source these flags select for `data_dir`.
    pub fn source(&self, data_dir: &Path) -> KeySource {
        match (&self.master_key_file, self.master_key_env) {
            (Some(file), _) => KeySource::File(file.clone()),
            (None, true) => KeySource::Env(ENV_VAR.to_owned()),
            (None, false) => KeySource::DataDir(data_dir.to_owned()),
        }
    }
}

/// The registry's database (default: SQLite in the data directory).
#[derive(Args, Clone, Debug, Default)]
pub struct DatabaseArgs {
    /// A `postgres://` (or `sqlite://`) URL instead of `DIR/registry.db`.
    // Help does not show the variable's value: a URL may hold a password.
    #[arg(
        long,
        value_name = "URL",
        env = "EMBER_DATABASE_URL",
        hide_env_values = true
    )]
    pub database_url: Option<String>,
}

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error(
        "{} is not an ember data directory (no {missing} in it); start `ember-control serve --data-dir {}` once first",
        .dir.display(),
        .dir.display()
    )]
    NotADataDir { dir: PathBuf, missing: &'static str },
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Artifacts(#[from] ArtifactError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error(transparent)]
    Account(#[from] AccountError),
    #[error(transparent)]
    Limit(#[from] ember_store::concurrency::LimitError),
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("{0}")]
    Fleet(String),
    #[error("{0} artifact(s) could not be re-wrapped; keep the older keys until they are")]
    RewrapFailed(usize),
    #[error("{count} database secret(s) are still sealed under master key {id}; run `keys rotate` (which re-seals them) first")]
    StillSealed { id: String, count: u64 },
}

impl From<sqlx::Error> for AdminError {
    fn from(e: sqlx::Error) -> AdminError {
        AdminError::Registry(RegistryError::Sql(e))
    }
}

/// The registry of `dir` (or `database`'s), sealing with the master keys `keys` selects.
async fn registry(
    dir: &DataDirArgs,
    database: &DatabaseArgs,
    keys: &MasterKeyArgs,
) -> Result<Registry, AdminError> {
    let registry = match &database.database_url {
        Some(url) => Registry::open(url).await?,
        None => {
            require(&dir.data_dir, DB_FILE)?;
            Registry::open_sqlite(&dir.data_dir).await?
        }
    };
    let keyring = Keyring::open(keys.source(&dir.data_dir))?;
    Ok(registry.with_sealer(Arc::new(Sealer::new(keyring))))
}

/// Refuses a directory the service never ran in (a mistyped path would otherwise get a
/// fresh keyring or database).
fn require(data_dir: &Path, entry: &'static str) -> Result<(), AdminError> {
    if data_dir.join(entry).exists() {
        Ok(())
    } else {
        Err(AdminError::NotADataDir {
            dir: data_dir.to_owned(),
            missing: entry,
        })
    }
}
