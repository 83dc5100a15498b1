//! What tests of the store share (its unit tests, and other crates' with the `test-util`
//! feature): a SQLite registry with one account, a version's configuration and code, and
//! functions with published versions.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use ember_core::keys::Keyring;
use ember_core::sealed::Sealer;

use ember_wire::function::ModuleKind;

use crate::functions::{self, Code, Config};
use crate::Registry;

pub const ACCOUNT: &str = "111111111111";

/// A sealer with the master keys of `data_dir` (made on first use).
pub fn sealer(data_dir: &Path) -> Arc<Sealer> {
    Arc::new(Sealer::new(Keyring::load_or_create(data_dir).unwrap()))
}

/// A new, empty SQLite registry (in the returned directory), sealing with the
/// directory's master keys.
pub async fn empty_registry() -> (tempfile::TempDir, Registry) {
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::open_sqlite(dir.path())
        .await
        .unwrap()
        .with_sealer(sealer(dir.path()));
    (dir, registry)
}

/// [`empty_registry`] with account [`ACCOUNT`].
pub async fn registry() -> (tempfile::TempDir, Registry) {
    let (dir, registry) = empty_registry().await;
    add_account(&registry).await;
    (dir, registry)
}

/// Adds account [`ACCOUNT`], named `owner`, to `registry`.
pub async fn add_account(registry: &Registry) {
    sqlx::query("INSERT INTO accounts (id, name, created_at) VALUES ($1, 'owner', 0)")
        .bind(ACCOUNT)
        .execute(registry.pool())
        .await
        .unwrap();
}

/// A version's configuration in [`ACCOUNT`], with one environment variable.
pub fn config() -> Config {
    Config {
        description: String::new(),
        runtime: "wasm32-wasip1".into(),
        handler: "handle".into(),
        role: format!("arn:aws:iam::{ACCOUNT}:role/r"),
        memory_size: 128,
        timeout: 3,
        environment: BTreeMap::from([("K".into(), "v".into())]),
    }
}

/// A reactor's code stored as `artifact_id`.
pub fn code(artifact_id: &str) -> Code {
    Code {
        kind: ModuleKind::Reactor,
        code_sha256: format!("sha of {artifact_id}"),
        code_size: 100,
        artifact_id: artifact_id.into(),
    }
}

/// Creates function `name` in [`ACCOUNT`] with versions 1..=`published`, each with new code.
pub async fn function(registry: &Registry, name: &str, published: i64) {
    let config = config();
    let code = |n: i64| code(&format!("{name}-{n}"));
    functions::create(registry, ACCOUNT, name, &config, &code(0), false, u64::MAX)
        .await
        .unwrap();
    for n in 1..=published {
        let change = functions::CodeChange {
            code: &code(n),
            handler: "handle",
            revision_id: None,
            publish: true,
        };
        functions::update_code(registry, ACCOUNT, name, change, u64::MAX)
            .await
            .unwrap();
    }
}
