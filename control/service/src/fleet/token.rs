//! The bootstrap token, kept in `DIR/worker-token` (mode 0600, made on first start) for
//! the operator to hand to workers (`emberd serve --token-file`) when one token for many
//! workers will do (`ember up`, a worker image). It is one join token among others
//! ([`super::join`]), under the id `bootstrap`; every request after registration is
//! authenticated by the worker's certificate instead.

use std::io;
use std::path::Path;

use zeroize::Zeroizing;

use ember_core::atomic::{self, with_path};
use ember_core::keydir::{self, KeyDir};
use ember_core::random;

/// The token file's name in the data directory.
pub const TOKEN_FILE: &str = "worker-token";

/// The bootstrap token.
pub struct BootstrapToken(Zeroizing<String>);

impl std::fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BootstrapToken(…)")
    }
}

impl BootstrapToken {
    /// The token of `data_dir`, made (64 random hex digits) when missing.
    pub fn load_or_create(data_dir: &Path) -> io::Result<BootstrapToken> {
        let path = data_dir.join(TOKEN_FILE);
        // The keys' lock: two services starting together must not write two tokens.
        let _lock = KeyDir::open(data_dir)?.lock()?;
        if let Some(bytes) = keydir::read_private(&path)? {
            let text = String::from_utf8(bytes.to_vec()).map_err(|_| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is not text", path.display()),
                )
            })?;
            let token = Zeroizing::new(text.trim().to_owned());
            if token.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} is empty", path.display()),
                ));
            }
            return Ok(BootstrapToken(token));
        }
        let token = Zeroizing::new(random::hex(&*random::key()?));
        atomic::write(&path, format!("{}\n", *token).as_bytes(), 0o600)
            .map_err(|e| with_path(e, &path))?;
        tracing::info!(path = %path.display(), "wrote the workers' bootstrap token");
        Ok(BootstrapToken(token))
    }

    /// The token's secret, as workers present it.
    pub fn secret(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn made_once_and_private() {
        let dir = tempfile::tempdir().unwrap();
        let token = BootstrapToken::load_or_create(dir.path()).unwrap();
        let path = dir.path().join(TOKEN_FILE);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.trim().len(), 64);
        assert_eq!(token.secret(), text.trim());
        let again = BootstrapToken::load_or_create(dir.path()).unwrap();
        assert_eq!(again.secret(), text.trim());

        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = BootstrapToken::load_or_create(dir.path()).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::PermissionDenied);
    }
}
