//! `keys rotate|list|retire`: master key management beside a running service.
//!
//! - `rotate` adds a fresh master key to the data directory's keyring, makes it active,
//!   re-wraps every artifact's data key under it (headers only; code is not
//!   re-encrypted) and re-seals the secrets in the database (access keys, function
//!   variables, queued events). For keys the operator manages (`--master-key-file`,
//!   `--master-key-env`), append the new key there first: `rotate` then re-wraps under
//!   the newest one. Artifacts it cannot re-wrap are listed and make it fail.
//! - `list` shows the keys, oldest first, and which one is active.
//! - `retire ID` removes an older key once no artifact and no database secret is sealed
//!   under it.

use std::io::Write;

use clap::Subcommand;

use crate::admin::{registry, require, AdminError, DataDirArgs, DatabaseArgs, MasterKeyArgs};
use ember_core::artifacts::{self, ArtifactStore};
use ember_core::keys::{KeySource, Keyring};
use ember_store::sealing;

/// The `keys` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum KeysCommand {
    /// Add a fresh master key, make it active, re-wrap every artifact and re-seal every
    /// database secret under it.
    Rotate {
        #[command(flatten)]
        dir: DataDirArgs,
        #[command(flatten)]
        keys: MasterKeyArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
    /// List the master keys, oldest first, marking the active one.
    List {
        #[command(flatten)]
        dir: DataDirArgs,
        #[command(flatten)]
        keys: MasterKeyArgs,
    },
    /// Remove master key ID once nothing is sealed under it any more.
    Retire {
        /// The key's id (`mk-…`, from `keys list`).
        id: String,
        #[command(flatten)]
        dir: DataDirArgs,
        #[command(flatten)]
        keys: MasterKeyArgs,
        #[command(flatten)]
        database: DatabaseArgs,
    },
}

impl KeysCommand {
    /// Runs the command, reporting on `out`.
    pub fn run(&self, out: &mut dyn Write) -> Result<(), AdminError> {
        match self {
            KeysCommand::Rotate {
                dir,
                keys,
                database,
            } => rotate(dir, keys, database, out),
            KeysCommand::List { dir, keys } => list(dir, keys, out),
            KeysCommand::Retire {
                id,
                dir,
                keys,
                database,
            } => {
                let (store, mut keyring) = open(dir, keys)?;
                let count = block_on(async {
                    let registry = registry(dir, database, keys).await?;
                    Ok::<_, AdminError>(sealing::count_sealed_under(&registry, id).await?)
                })?;
                if count > 0 {
                    return Err(AdminError::StillSealed {
                        id: id.clone(),
                        count,
                    });
                }
                store.retire_key(&mut keyring, id)?;
                writeln!(out, "retired master key {id}")?;
                Ok(())
            }
        }
    }
}

fn rotate(
    dir: &DataDirArgs,
    keys: &MasterKeyArgs,
    database: &DatabaseArgs,
    out: &mut dyn Write,
) -> Result<(), AdminError> {
    let (store, mut keyring) = open(dir, keys)?;
    if let KeySource::DataDir(_) = keyring.source() {
        let active = keyring.rotate()?;
        writeln!(out, "new active master key {}", active.id())?;
    } else {
        writeln!(
            out,
            "master keys in {} are managed outside ember; re-wrapping under the newest, {}",
            keyring.source(),
            keyring.active().id()
        )?;
    }
    let report = store.rewrap_all(&keyring)?;
    writeln!(
        out,
        "re-wrapped {} artifact(s); {} already were under {}",
        report.rewrapped,
        report.current,
        keyring.active().id()
    )?;
    for (account, artifact_id, error) in &report.failed {
        writeln!(out, "could not re-wrap {account}/{artifact_id}: {error}")?;
    }
    let resealed = block_on(async {
        let registry = registry(dir, database, keys).await?;
        Ok::<_, AdminError>(sealing::reseal_all(&registry).await?)
    })?;
    writeln!(
        out,
        "re-sealed {} database secret(s) under {}",
        resealed.resealed,
        keyring.active().id()
    )?;
    if report.failed.is_empty() {
        Ok(())
    } else {
        Err(AdminError::RewrapFailed(report.failed.len()))
    }
}

fn list(dir: &DataDirArgs, keys: &MasterKeyArgs, out: &mut dyn Write) -> Result<(), AdminError> {
    let (_, keyring) = open(dir, keys)?;
    writeln!(out, "{:<20}  {:<20}  STATE", "ID", "CREATED")?;
    for key in keyring.keys() {
        let created = match key.created() {
            // Keys given from outside carry no date.
            0 => "-".to_owned(),
            secs => chrono::DateTime::from_timestamp(secs as i64, 0).map_or_else(
                || "-".to_owned(),
                |t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
            ),
        };
        let state = if key.id() == keyring.active().id() {
            "active"
        } else {
            "older"
        };
        writeln!(out, "{:<20}  {created:<20}  {state}", key.id())?;
    }
    Ok(())
}

/// Runs `work` to completion: the commands are synchronous, the database is not.
fn block_on<T>(
    work: impl std::future::Future<Output = Result<T, AdminError>>,
) -> Result<T, AdminError> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(work)
}

/// The keyring and artifact store of an existing data directory.
fn open(dir: &DataDirArgs, keys: &MasterKeyArgs) -> Result<(ArtifactStore, Keyring), AdminError> {
    require(&dir.data_dir, artifacts::DIR)?;
    let keyring = Keyring::open(keys.source(&dir.data_dir))?;
    let store = ArtifactStore::open(&dir.data_dir, keyring.clone())?;
    Ok((store, keyring))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ember_core::keys::KeySource;
    use std::os::unix::fs::PermissionsExt;

    fn run(command: KeysCommand) -> (Result<(), AdminError>, String) {
        let mut out = Vec::new();
        let result = command.run(&mut out);
        (result, String::from_utf8(out).unwrap())
    }

    /// The service's registry in `data`, sealing with `data`'s keys, as a started service
    /// leaves it.
    fn registry_in(data: &std::path::Path) -> ember_store::Registry {
        let keyring = Keyring::load_or_create(data).unwrap();
        block_on(async {
            Ok(ember_store::Registry::open_sqlite(data)
                .await?
                .with_sealer(std::sync::Arc::new(ember_core::sealed::Sealer::new(
                    keyring,
                ))))
        })
        .unwrap()
    }

    fn args(data: &std::path::Path) -> (DataDirArgs, MasterKeyArgs) {
        let dir = DataDirArgs {
            data_dir: data.to_owned(),
        };
        (dir, MasterKeyArgs::default())
    }

    #[test]
    fn rotates_rewraps_lists_and_retires() {
        let data = tempfile::tempdir().unwrap();
        let keyring = Keyring::load_or_create(data.path()).unwrap();
        let first = keyring.active().id().to_owned();
        let store = ArtifactStore::open(data.path(), keyring).unwrap();
        store.put("111122223333", "a", b"code a").unwrap();
        store.put("111122223333", "b", b"code b").unwrap();
        let registry = registry_in(data.path());
        let key = block_on(async {
            let account = ember_store::accounts::create(registry.pool(), "team").await?;
            Ok(ember_store::accounts::create_key(&registry, &account.id).await?)
        })
        .unwrap();
        let (dir, keys) = args(data.path());

        let (result, out) = run(KeysCommand::Retire {
            id: first.clone(),
            dir: dir.clone(),
            keys: keys.clone(),
            database: DatabaseArgs::default(),
        });
        assert!(result.is_err(), "{out}");

        let (result, out) = run(KeysCommand::Rotate {
            dir: dir.clone(),
            keys: keys.clone(),
            database: DatabaseArgs::default(),
        });
        result.unwrap();
        assert!(
            out.contains("re-wrapped 2 artifact(s); 0 already were"),
            "{out}"
        );
        assert!(out.contains("re-sealed 1 database secret(s)"), "{out}");
        let second = Keyring::load_or_create(data.path())
            .unwrap()
            .active()
            .id()
            .to_owned();
        assert_ne!(second, first);
        assert!(
            out.contains(&format!("new active master key {second}")),
            "{out}"
        );

        let (result, out) = run(KeysCommand::List {
            dir: dir.clone(),
            keys: keys.clone(),
        });
        result.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 3, "{out}");
        assert!(
            lines[1].starts_with(&first) && lines[1].ends_with("older"),
            "{out}"
        );
        assert!(
            lines[2].starts_with(&second) && lines[2].ends_with("active"),
            "{out}"
        );

        let (result, out) = run(KeysCommand::Retire {
            id: first.clone(),
            dir: dir.clone(),
            keys: keys.clone(),
            database: DatabaseArgs::default(),
        });
        result.unwrap();
        assert_eq!(out, format!("retired master key {first}\n"));
        assert_eq!(store.get("111122223333", "a").unwrap(), b"code a");
        let registry = registry_in(data.path());
        let found =
            block_on(async { Ok(ember_store::accounts::find_key(&registry, &key.key_id).await?) });
        assert_eq!(found.unwrap(), Some(key));
    }

    #[test]
    fn retire_refuses_while_database_secrets_are_sealed_under_the_key() {
        let data = tempfile::tempdir().unwrap();
        let mut keyring = Keyring::load_or_create(data.path()).unwrap();
        let first = keyring.active().id().to_owned();
        ArtifactStore::open(data.path(), keyring.clone()).unwrap();
        let registry = registry_in(data.path());
        block_on(async {
            let account = ember_store::accounts::create(registry.pool(), "team").await?;
            Ok(ember_store::accounts::create_key(&registry, &account.id).await?)
        })
        .unwrap();
        // Rotated without the command: the secret stays sealed under the first key.
        keyring.rotate().unwrap();
        let (dir, keys) = args(data.path());
        let (result, _) = run(KeysCommand::Retire {
            id: first.clone(),
            dir,
            keys,
            database: DatabaseArgs::default(),
        });
        assert!(
            matches!(result, Err(AdminError::StillSealed { ref id, count: 1 }) if *id == first),
            "{result:?}"
        );
        assert!(Keyring::load_or_create(data.path())
            .unwrap()
            .get(&first)
            .is_some());
    }

    #[test]
    fn fails_when_an_artifact_cannot_be_rewrapped() {
        let data = tempfile::tempdir().unwrap();
        let store = ArtifactStore::open(data.path(), Keyring::load_or_create(data.path()).unwrap());
        store.unwrap().put("acct", "a", b"x").unwrap();
        registry_in(data.path());
        let header = data.path().join("artifacts/acct/a.hdr");
        let mut bytes = std::fs::read(&header).unwrap();
        bytes[20] ^= 1;
        std::fs::write(&header, bytes).unwrap();
        let (dir, keys) = args(data.path());
        let (result, out) = run(KeysCommand::Rotate {
            dir,
            keys,
            database: DatabaseArgs::default(),
        });
        assert!(matches!(result, Err(AdminError::RewrapFailed(1))), "{out}");
        assert!(out.contains("could not re-wrap acct/a: "), "{out}");
    }

    #[test]
    fn rewraps_under_the_newest_key_of_a_file() {
        let data = tempfile::tempdir().unwrap();
        let file = data.path().join("master.keys");
        let k1 = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
        let k2 = "AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=";
        std::fs::write(&file, k1).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let keyring = Keyring::open(KeySource::File(file.clone())).unwrap();
        ArtifactStore::open(data.path(), keyring)
            .unwrap()
            .put("acct", "a", b"x")
            .unwrap();
        registry_in(data.path());
        std::fs::write(&file, format!("{k1}\n{k2}\n")).unwrap();
        let dir = DataDirArgs {
            data_dir: data.path().to_owned(),
        };
        let keys = MasterKeyArgs {
            master_key_file: Some(file),
            master_key_env: false,
        };
        let (result, out) = run(KeysCommand::Rotate {
            dir,
            keys,
            database: DatabaseArgs::default(),
        });
        result.unwrap();
        assert!(out.contains("managed outside ember"), "{out}");
        assert!(out.contains("re-wrapped 1 artifact(s)"), "{out}");
    }

    #[test]
    fn refuses_a_directory_the_service_never_used() {
        let data = tempfile::tempdir().unwrap();
        let (dir, keys) = args(&data.path().join("typo"));
        let (result, _) = run(KeysCommand::List { dir, keys });
        let err = result.unwrap_err();
        assert!(matches!(err, AdminError::NotADataDir { .. }), "{err}");
        assert!(!data.path().join("typo").exists());
    }
}
