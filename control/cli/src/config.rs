//! Where the CLI finds the service and the keys to sign with. `ember configure` writes a
//! JSON file (`$EMBER_CONFIG`, else `$XDG_CONFIG_HOME/ember/config.json`, else
//! `~/.config/ember/config.json`); every command reads it, and the global flags (with their
//! `EMBER_*` variables) and AWS's own key variables override it for one run.
//!
//! Keys are best kept as a reference to a shared-credentials file and profile (the control
//! data directory's `credentials`, or `~/.aws/credentials`): they are read at each command,
//! so rotated keys are picked up. Keys given literally are stored in the file itself, which
//! is why it is written owner-only.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use aws_credential_types::Credentials;
use clap::builder::{OsStringValueParser, TypedValueParser};
use reqwest::Url;
use serde::{Deserialize, Serialize};

use super::credentials;
use super::error::CliError;

/// The region when none is configured: ember-control's default.
pub const DEFAULT_REGION: &str = "local";

/// The configuration file's contents. Every field is optional so that `configure` can set
/// them one at a time.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ConfigFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// PEM file of the CA that issued the service's certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials: Option<StoredCredentials>,
}

/// Where the keys come from.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "source", rename_all = "snake_case")]
pub enum StoredCredentials {
    /// A profile of a shared-credentials file, read at each command.
    File { path: PathBuf, profile: String },
    /// Keys stored in the configuration file itself.
    Keys {
        access_key_id: String,
        secret_access_key: String,
    },
}

impl StoredCredentials {
    /// The keys, read from the file if they live in one.
    pub fn load(&self) -> Result<Credentials, CliError> {
        match self {
            StoredCredentials::File { path, profile } => credentials::load(path, profile),
            StoredCredentials::Keys {
                access_key_id,
                secret_access_key,
            } => Ok(credentials::keys(
                access_key_id.clone(),
                secret_access_key.clone(),
                None,
                None,
            )),
        }
    }
}

/// Says where the keys come from, never what the secret is (used by `Debug` too).
impl fmt::Display for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoredCredentials::File { path, profile } => {
                write!(f, "profile [{profile}] of {}", path.display())
            }
            StoredCredentials::Keys { access_key_id, .. } => {
                write!(
                    f,
                    "access key {access_key_id} (secret stored in the config file)"
                )
            }
        }
    }
}

impl fmt::Debug for StoredCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The configuration file's path.
pub fn path() -> Result<PathBuf, CliError> {
    let var = |name| std::env::var_os(name).filter(|v| !v.is_empty());
    if let Some(path) = var("EMBER_CONFIG") {
        return Ok(PathBuf::from(path));
    }
    let base = var("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|home| Path::new(&home).join(".config")))
        .ok_or_else(|| {
            CliError::Config("cannot find the config directory: set HOME or EMBER_CONFIG".into())
        })?;
    Ok(base.join("ember/config.json"))
}

impl ConfigFile {
    /// Reads the file at `path`; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<ConfigFile, CliError> {
        match std::fs::read(path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| CliError::Config(format!("{}: {e}", path.display()))),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(ConfigFile::default()),
            Err(e) => Err(CliError::file(path, e)),
        }
    }

    /// Replaces the file at `path` atomically, readable by the owner only.
    pub fn save(&self, path: &Path) -> Result<(), CliError> {
        let mut bytes = serde_json::to_vec_pretty(self).expect("the config serializes");
        bytes.push(b'\n');
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        ember_core::atomic::private_dir(dir)
            .and_then(|()| ember_core::atomic::write(path, &bytes, 0o600))
            .map_err(|e| CliError::file(path, e))
    }
}

/// Where `--help` lists the flags every command takes, apart from each command's own.
pub const GLOBAL: &str = "Global options";

/// Flags every command takes; each overrides the configuration file.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct Overrides {
    /// The service's URL, e.g. https://127.0.0.1:9443
    #[arg(long, global = true, env = "EMBER_ENDPOINT", value_name = "URL", help_heading = GLOBAL)]
    pub endpoint: Option<String>,
    /// The region to sign for (ember-control's --region; default "local")
    #[arg(long, global = true, env = "EMBER_REGION", help_heading = GLOBAL)]
    pub region: Option<String>,
    /// Use this profile of the credentials file (instead of AWS_ACCESS_KEY_ID etc.)
    #[arg(long, global = true, env = "EMBER_PROFILE", help_heading = GLOBAL)]
    pub profile: Option<String>,
    /// PEM file of the CA to trust for the service's certificate
    #[arg(
        long,
        global = true,
        env = "EMBER_CA",
        value_name = "PEM",
        help_heading = GLOBAL,
        value_parser = OsStringValueParser::new().map(PathBuf::from)
    )]
    pub ca: Option<PathBuf>,
}

impl Overrides {
    /// Drops empty values: `EMBER_REGION=` in the environment means "not set", as for the
    /// AWS CLI's variables.
    pub fn without_empty(self) -> Overrides {
        let string = |v: Option<String>| v.filter(|v| !v.is_empty());
        Overrides {
            endpoint: string(self.endpoint),
            region: string(self.region),
            profile: string(self.profile),
            ca: self.ca.filter(|ca| !ca.as_os_str().is_empty()),
        }
    }
}

/// Everything a request needs, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    pub endpoint: Url,
    pub region: String,
    pub ca: Option<PathBuf>,
    pub credentials: Credentials,
}

/// Merges the file, the flags and the keys from the environment (`env_keys`), in rising
/// precedence; `--profile` wins over environment keys, as in the AWS CLI.
pub fn resolve(
    file: &ConfigFile,
    flags: &Overrides,
    env_keys: Option<Credentials>,
) -> Result<Settings, CliError> {
    let endpoint = flags
        .endpoint
        .as_deref()
        .or(file.endpoint.as_deref())
        .ok_or_else(|| {
            CliError::Config(
                "no endpoint configured: run `ember configure --endpoint https://HOST:PORT …`, \
                 or pass --endpoint or set EMBER_ENDPOINT"
                    .into(),
            )
        })?;
    let credentials =
        match (&flags.profile, env_keys, &file.credentials) {
            (Some(profile), _, stored) => {
                let path = match stored {
                    Some(StoredCredentials::File { path, .. }) => path.clone(),
                    _ => credentials::default_file().ok_or_else(|| {
                        CliError::Config("no credentials file to read --profile from".into())
                    })?,
                };
                credentials::load(&path, profile)?
            }
            (None, Some(keys), _) => keys,
            (None, None, Some(stored)) => stored.load()?,
            (None, None, None) => return Err(CliError::Config(
                "no credentials configured: run `ember configure --from-data-dir DIR …`, or set \
                 AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
                    .into(),
            )),
        };
    Ok(Settings {
        endpoint: parse_endpoint(endpoint)?,
        region: flags
            .region
            .clone()
            .or_else(|| file.region.clone())
            .unwrap_or_else(|| DEFAULT_REGION.to_owned()),
        ca: flags.ca.clone().or_else(|| file.ca.clone()),
        credentials,
    })
}

/// Checks that `endpoint` is an http(s) URL with a host and nothing after the path.
pub fn parse_endpoint(endpoint: &str) -> Result<Url, CliError> {
    let bad = |why: &str| CliError::Config(format!("endpoint {endpoint:?}: {why}"));
    let url = Url::parse(endpoint).map_err(|e| bad(&e.to_string()))?;
    if !matches!(url.scheme(), "https" | "http") || url.host().is_none() {
        return Err(bad("expected https://HOST[:PORT]"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(bad("a query or fragment has no place in an endpoint"));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_with_keys() -> ConfigFile {
        ConfigFile {
            endpoint: Some("https://file:1".into()),
            region: Some("file-region".into()),
            ca: Some("/file/ca.pem".into()),
            credentials: Some(StoredCredentials::Keys {
                access_key_id: "AKIAFILE".into(),
                secret_access_key: "file-secret".into(),
            }),
        }
    }

    #[test]
    fn the_file_applies_when_nothing_overrides_it() {
        let s = resolve(&file_with_keys(), &Overrides::default(), None).unwrap();
        assert_eq!(s.endpoint.as_str(), "https://file:1/");
        assert_eq!(s.region, "file-region");
        assert_eq!(s.ca.as_deref(), Some(Path::new("/file/ca.pem")));
        assert_eq!(s.credentials.access_key_id(), "AKIAFILE");
    }

    #[test]
    fn flags_and_environment_keys_override_the_file() {
        let flags = Overrides {
            endpoint: Some("https://flag:2".into()),
            region: Some("flag-region".into()),
            profile: None,
            ca: Some("/flag/ca.pem".into()),
        };
        let env = credentials::keys("AKIAENV".into(), "env".into(), Some("tok".into()), None);
        let s = resolve(&file_with_keys(), &flags, Some(env)).unwrap();
        assert_eq!(s.endpoint.as_str(), "https://flag:2/");
        assert_eq!(s.region, "flag-region");
        assert_eq!(s.ca.as_deref(), Some(Path::new("/flag/ca.pem")));
        assert_eq!(s.credentials.access_key_id(), "AKIAENV");
        assert_eq!(s.credentials.session_token(), Some("tok"));
    }

    #[test]
    fn profile_reads_the_configured_credentials_file_over_env_keys() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("credentials");
        std::fs::write(
            &creds,
            "[ember]\naws_access_key_id = AKIAEMBER\naws_secret_access_key = a\n\
             [other]\naws_access_key_id = AKIAOTHER\naws_secret_access_key = b\n",
        )
        .unwrap();
        let file = ConfigFile {
            endpoint: Some("https://h".into()),
            credentials: Some(StoredCredentials::File {
                path: creds,
                profile: "ember".into(),
            }),
            ..ConfigFile::default()
        };
        let s = resolve(&file, &Overrides::default(), None).unwrap();
        assert_eq!(s.credentials.access_key_id(), "AKIAEMBER");
        assert_eq!(s.region, DEFAULT_REGION);
        let flags = Overrides {
            profile: Some("other".into()),
            ..Overrides::default()
        };
        let env = credentials::keys("AKIAENV".into(), "env".into(), None, None);
        let s = resolve(&file, &flags, Some(env)).unwrap();
        assert_eq!(s.credentials.access_key_id(), "AKIAOTHER");
    }

    #[test]
    fn empty_flags_count_as_unset() {
        let flags = Overrides {
            endpoint: Some(String::new()),
            region: Some(String::new()),
            profile: Some(String::new()),
            ca: Some(PathBuf::new()),
        };
        let s = resolve(&file_with_keys(), &flags.without_empty(), None).unwrap();
        assert_eq!(s.endpoint.as_str(), "https://file:1/");
        assert_eq!(s.region, "file-region");
        assert_eq!(s.ca.as_deref(), Some(Path::new("/file/ca.pem")));
        assert_eq!(s.credentials.access_key_id(), "AKIAFILE");
    }

    #[test]
    fn missing_pieces_say_how_to_configure() {
        let err = resolve(&ConfigFile::default(), &Overrides::default(), None).unwrap_err();
        assert!(err.to_string().contains("ember configure"), "{err}");
        let no_keys = ConfigFile {
            endpoint: Some("https://h".into()),
            ..ConfigFile::default()
        };
        let err = resolve(&no_keys, &Overrides::default(), None).unwrap_err();
        assert!(err.to_string().contains("no credentials"), "{err}");
        for bad in ["ftp://h", "h:1", "https://h/?x=1"] {
            assert!(parse_endpoint(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn saves_owner_only_and_reads_back_without_showing_secrets() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new/config.json");
        assert_eq!(ConfigFile::load(&path).unwrap(), ConfigFile::default());
        let file = file_with_keys();
        file.save(&path).unwrap();
        assert_eq!(ConfigFile::load(&path).unwrap(), file);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!format!("{file:?}").contains("file-secret"));
    }
}
