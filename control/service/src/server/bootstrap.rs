//! First start: an `admin` account and its access key, written to `DIR/credentials` (AWS
//! shared-credentials format, profile `ember`, mode 0600) so the stock AWS CLI works at
//! once:
//!
//! ```text
//! AWS_SHARED_CREDENTIALS_FILE=DIR/credentials AWS_CA_BUNDLE=DIR/ca.pem \
//!   aws --profile ember --region local --endpoint-url https://127.0.0.1:PORT lambda list-functions
//! ```
//!
//! The file's presence is what "bootstrapped" means: while it exists nothing happens; if
//! it is removed, the next start gives `admin` a new key and writes it again (the old key
//! keeps working).

use crate::admin::account::credentials_profile;
use crate::service::Service;
use ember_core::atomic;
use ember_store::accounts::{self, AccountError};

/// The credentials file's name in the data directory.
pub const CREDENTIALS_FILE: &str = "credentials";

/// The account made on first start.
pub const ADMIN: &str = "admin";

/// The profile name in the credentials file.
pub const PROFILE: &str = "ember";

/// Creates the admin account and credentials file unless the file exists.
pub async fn ensure_admin(service: &Service) -> Result<(), AccountError> {
    let path = service.data_dir.join(CREDENTIALS_FILE);
    if path.exists() {
        return Ok(());
    }
    let pool = service.registry.pool();
    let account = match accounts::create(pool, ADMIN).await {
        Ok(account) => account,
        // Made by an earlier start (or another instance on the same database).
        Err(AccountError::NameTaken(_)) => accounts::by_name(pool, ADMIN)
            .await?
            .ok_or_else(|| AccountError::NoSuchAccount(ADMIN.to_owned()))?,
        Err(e) => return Err(e),
    };
    let key = accounts::create_key(&service.registry, &account.id).await?;
    let profile = credentials_profile(PROFILE, &account, &key);
    atomic::write(&path, profile.as_bytes(), 0o600).map_err(|e| atomic::with_path(e, &path))?;
    tracing::info!(
        account = %account.id,
        credentials = %path.display(),
        "wrote the admin account's access key (profile {PROFILE})"
    );
    Ok(())
}
