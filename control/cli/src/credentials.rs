//! Keys from an AWS shared-credentials file (`~/.aws/credentials`, or the `credentials` file
//! `ember-control` writes into its data directory): INI sections named by profile holding
//! `aws_access_key_id`, `aws_secret_access_key` and optionally `aws_session_token` and
//! `aws_account_id` (the SDKs' name for the account the keys belong to). Reading the same
//! format the AWS CLI reads lets one file serve both tools.

use std::path::{Path, PathBuf};

use aws_credential_types::Credentials;

use super::error::CliError;

/// The name aws-sigv4 records as where the keys came from (shows in its debug output).
const PROVIDER: &str = "ember-cli";

/// The AWS CLI's default credentials file: `$AWS_SHARED_CREDENTIALS_FILE` or
/// `~/.aws/credentials`.
pub fn default_file() -> Option<PathBuf> {
    if let Some(file) = std::env::var_os("AWS_SHARED_CREDENTIALS_FILE") {
        return Some(PathBuf::from(file));
    }
    std::env::var_os("HOME").map(|home| Path::new(&home).join(".aws/credentials"))
}

/// Reads `profile`'s keys from the credentials file at `path`.
pub fn load(path: &Path, profile: &str) -> Result<Credentials, CliError> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?;
    parse(&text, profile).map_err(|reason| {
        CliError::Config(format!("{}: profile [{profile}]: {reason}", path.display()))
    })
}

/// Keys from environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_ACCOUNT_ID`) as `lookup` returns them, when both keys are set.
pub fn from_env(lookup: impl Fn(&str) -> Option<String>) -> Option<Credentials> {
    let non_empty = |name: &str| lookup(name).filter(|v| !v.is_empty());
    let id = non_empty("AWS_ACCESS_KEY_ID")?;
    let secret = non_empty("AWS_SECRET_ACCESS_KEY")?;
    Some(keys(
        id,
        secret,
        non_empty("AWS_SESSION_TOKEN"),
        non_empty("AWS_ACCOUNT_ID"),
    ))
}

/// Credentials from an access key pair, with the session token of temporary credentials
/// and the account the keys belong to when known.
pub fn keys(
    id: String,
    secret: String,
    session_token: Option<String>,
    account_id: Option<String>,
) -> Credentials {
    let mut builder = Credentials::builder()
        .access_key_id(id)
        .secret_access_key(secret)
        .provider_name(PROVIDER);
    builder.set_session_token(session_token);
    builder.set_account_id(account_id.map(Into::into));
    builder.build()
}

/// Finds `profile`'s section in the INI `text`; the error says what is missing.
fn parse(text: &str, profile: &str) -> Result<Credentials, String> {
    let mut in_profile = false;
    let mut found = false;
    let (mut id, mut secret, mut token, mut account) = (None, None, None, None);
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(section) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            in_profile = section.trim() == profile;
            found |= in_profile;
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        if !in_profile {
            continue;
        }
        let value = Some(value.trim().to_owned());
        match key.trim().to_ascii_lowercase().as_str() {
            "aws_access_key_id" => id = value,
            "aws_secret_access_key" => secret = value,
            "aws_session_token" => token = value,
            "aws_account_id" => account = value,
            _ => {}
        }
    }
    if !found {
        return Err("no such profile".into());
    }
    match (id, secret) {
        (Some(id), Some(secret)) => Ok(keys(id, secret, token, account)),
        _ => Err("needs aws_access_key_id and aws_secret_access_key".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# comment\n[default]\naws_access_key_id = AKIADEFAULT\naws_secret_access_key = d\n\n[ember]\n; keys written by ember-control\nAWS_ACCESS_KEY_ID=AKIAEMBER\naws_secret_access_key = s/e+c=ret\naws_session_token = tok\naws_account_id = 123456789012\n[half]\naws_access_key_id = AKIAHALF\n";

    #[test]
    fn reads_the_named_profile_only() {
        let c = parse(FILE, "ember").unwrap();
        assert_eq!(c.access_key_id(), "AKIAEMBER");
        assert_eq!(c.secret_access_key(), "s/e+c=ret");
        assert_eq!(c.session_token(), Some("tok"));
        assert_eq!(c.account_id().map(|a| a.as_str()), Some("123456789012"));
        let d = parse(FILE, "default").unwrap();
        assert_eq!(d.access_key_id(), "AKIADEFAULT");
        assert_eq!(d.session_token(), None);
        assert!(d.account_id().is_none());
    }

    #[test]
    fn says_what_is_missing() {
        assert_eq!(parse(FILE, "nope").unwrap_err(), "no such profile");
        assert!(parse(FILE, "half")
            .unwrap_err()
            .contains("aws_secret_access_key"));
    }

    #[test]
    fn env_needs_both_keys() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| {
                pairs
                    .iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert!(from_env(env(&[("AWS_ACCESS_KEY_ID", "AKIA")])).is_none());
        assert!(from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "")
        ]))
        .is_none());
        let c = from_env(env(&[
            ("AWS_ACCESS_KEY_ID", "AKIA"),
            ("AWS_SECRET_ACCESS_KEY", "s"),
            ("AWS_ACCOUNT_ID", "123456789012"),
        ]))
        .unwrap();
        assert_eq!((c.access_key_id(), c.session_token()), ("AKIA", None));
        assert_eq!(c.account_id().map(|a| a.as_str()), Some("123456789012"));
    }
}
