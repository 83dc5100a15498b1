//! `account create NAME`: a new account with one access key, printed as a
//! shared-credentials profile named after the account, ready to append to
//! `~/.aws/credentials`. `account set-concurrency ACCOUNT LIMIT`: the invocations the
//! account may have in flight (`default`: 1000). Both work beside a running service; a
//! new limit applies to the next invocation.

use std::io::Write;

use clap::Subcommand;

use crate::admin::{registry, AdminError, DataDirArgs, DatabaseArgs, MasterKeyArgs};
use ember_store::accounts::{self, AccessKey, Account, AccountError};
use ember_store::concurrency::{self, AccountConcurrency};

/// The `account` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum AccountCommand {
    /// Create account NAME with an access key; print them as a credentials profile NAME.
    Create {
        /// Letters, digits, '-' and '_'; unique.
        name: String,
        #[command(flatten)]
        dir: DataDirArgs,
        #[command(flatten)]
        database: DatabaseArgs,
        /// The service's master keys: the access key's secret is sealed under them.
        #[command(flatten)]
        keys: MasterKeyArgs,
    },
    /// Set how many invocations ACCOUNT may have in flight across the fleet; its
    /// functions' reserved concurrency is carved out of it and the rest is shared by its
    /// other functions. Refused below the reservations plus 100.
    SetConcurrency {
        /// The account's name or 12-digit id.
        account: String,
        /// 0 to 1000000 (0 throttles every invocation), or `default` (1000).
        limit: String,
        #[command(flatten)]
        dir: DataDirArgs,
        #[command(flatten)]
        database: DatabaseArgs,
        #[command(flatten)]
        keys: MasterKeyArgs,
    },
}

impl AccountCommand {
    /// Runs the command, printing its result on `out`.
    pub async fn run(&self, out: &mut dyn Write) -> Result<(), AdminError> {
        match self {
            AccountCommand::Create {
                name,
                dir,
                database,
                keys,
            } => {
                let registry = registry(dir, database, keys).await?;
                let account = accounts::create(registry.pool(), name).await?;
                let key = accounts::create_key(&registry, &account.id).await?;
                out.write_all(credentials_profile(name, &account, &key).as_bytes())?;
                Ok(())
            }
            AccountCommand::SetConcurrency {
                account,
                limit,
                dir,
                database,
                keys,
            } => {
                let limit = parse_limit(limit)?;
                let registry = registry(dir, database, keys).await?;
                let pool = registry.pool();
                let found = match accounts::by_name(pool, account).await? {
                    Some(found) => found,
                    None => accounts::get(pool, account)
                        .await?
                        .ok_or_else(|| AccountError::NoSuchAccount(account.clone()))?,
                };
                let set = concurrency::set_account_limit(pool, &found.id, limit).await?;
                writeln!(out, "{}", describe(&found, &set))?;
                Ok(())
            }
        }
    }
}

/// `N` or `default` (`None`).
fn parse_limit(text: &str) -> Result<Option<i64>, AdminError> {
    if text == "default" {
        return Ok(None);
    }
    match text.parse::<i64>() {
        Ok(n) if (0..=concurrency::MAX_ACCOUNT_CONCURRENCY_LIMIT).contains(&n) => Ok(Some(n)),
        _ => Err(AdminError::Io(std::io::Error::other(format!(
            "invalid concurrency limit {text:?}: expected a number from 0 to {} or `default`",
            concurrency::MAX_ACCOUNT_CONCURRENCY_LIMIT
        )))),
    }
}

/// One line: the account, its limit, what its functions reserve and what is left.
fn describe(account: &Account, set: &AccountConcurrency) -> String {
    format!(
        "account {} ({}): concurrency limit {}, reserved {}, unreserved {}",
        account.name, account.id, set.limit, set.committed, set.unreserved
    )
}

/// `key` as a profile of an AWS shared-credentials file, with a comment naming the
/// account.
pub fn credentials_profile(profile: &str, account: &Account, key: &AccessKey) -> String {
    format!(
        "# ember account {}\n[{profile}]\naws_account_id = {}\naws_access_key_id = {}\naws_secret_access_key = {}\n",
        account.name, account.id, key.key_id, key.secret
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn create(data: &std::path::Path, name: &str) -> (Result<(), AdminError>, String) {
        let command = AccountCommand::Create {
            name: name.to_owned(),
            dir: DataDirArgs {
                data_dir: data.to_owned(),
            },
            database: DatabaseArgs::default(),
            keys: MasterKeyArgs::default(),
        };
        let mut out = Vec::new();
        let result = command.run(&mut out).await;
        (result, String::from_utf8(out).unwrap())
    }

    #[tokio::test]
    async fn creates_accounts_and_prints_their_profile() {
        let data = tempfile::tempdir().unwrap();
        // Not before the service made the registry.
        let (result, _) = create(data.path(), "team").await;
        assert!(matches!(result, Err(AdminError::NotADataDir { .. })));
        let registry = ember_store::Registry::open_sqlite(data.path())
            .await
            .unwrap()
            .with_sealer(std::sync::Arc::new(ember_core::sealed::Sealer::new(
                ember_core::keys::Keyring::load_or_create(data.path()).unwrap(),
            )));

        let (result, out) = create(data.path(), "team").await;
        result.unwrap();
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 5, "{out}");
        assert_eq!(lines[0], "# ember account team", "{out}");
        assert_eq!(lines[1], "[team]");
        let account_id = lines[2].strip_prefix("aws_account_id = ").unwrap();
        assert!(account_id.len() == 12 && account_id.bytes().all(|b| b.is_ascii_digit()));
        let key_id = lines[3].strip_prefix("aws_access_key_id = ").unwrap();
        let secret = lines[4].strip_prefix("aws_secret_access_key = ").unwrap();
        let key = accounts::find_key(&registry, key_id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(key.secret, secret);
        let account = accounts::by_name(registry.pool(), "team").await.unwrap();
        assert_eq!(account.unwrap().id, key.account_id);

        let (result, out) = create(data.path(), "team").await;
        assert_eq!(
            result.unwrap_err().to_string(),
            "an account named \"team\" exists already"
        );
        assert!(out.is_empty());
    }
}
