//! `ember configure`: saves the endpoint, region, CA and keys for later commands. Only what is
//! given changes; the rest of an existing configuration stays. Files are checked before
//! anything is written, so a typo fails here rather than at the next command.

use std::path::{Path, PathBuf};

use clap::Args;
use serde_json::{json, Value};

use super::client::load_ca;
use super::config::{self, ConfigFile, Overrides, StoredCredentials};
use super::credentials;
use super::error::CliError;
use super::output::{fields, text, Format};

/// The profile `ember-control` writes the admin's keys under in `DIR/credentials`.
const DATA_DIR_PROFILE: &str = "ember";

/// Where the keys come from; `--endpoint`, `--region`, `--ca` and `--profile` are the
/// global flags.
#[derive(Debug, Args)]
pub struct ConfigureArgs {
    /// Use an ember-control data directory: its ca.pem, and the admin's keys from its
    /// credentials file (profile "ember" unless --profile)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["credentials_file", "access_key_id"])]
    from_data_dir: Option<PathBuf>,
    /// Use keys from this shared-credentials file (profile "default" unless --profile)
    #[arg(long, value_name = "FILE", conflicts_with = "access_key_id")]
    credentials_file: Option<PathBuf>,
    /// Store this access key in the config file (with --secret-access-key)
    #[arg(long, requires = "secret_access_key", value_name = "KEY")]
    access_key_id: Option<String>,
    /// The access key's secret (stored in the config file, readable by you only)
    #[arg(long, requires = "access_key_id", value_name = "SECRET")]
    secret_access_key: Option<String>,
}

pub fn run(args: ConfigureArgs, flags: &Overrides, format: Format) -> Result<(), CliError> {
    let path = config::path()?;
    let file = apply(ConfigFile::load(&path)?, args, flags)?;
    if let Some(ca) = &file.ca {
        load_ca(ca)?;
    }
    if let Some(stored) = &file.credentials {
        stored.load()?;
    }
    file.save(&path)?;
    format.print(&summary(&path, &file), |s| {
        format!(
            "wrote {}\n{}",
            path.display(),
            fields(&[
                ("endpoint", text(s, "endpoint")),
                ("region", text(s, "region")),
                ("ca", text(s, "ca")),
                ("credentials", text(s, "credentials")),
            ])
        )
    })
}

/// The configuration after applying `args` and `flags` to `file`.
fn apply(
    mut file: ConfigFile,
    args: ConfigureArgs,
    flags: &Overrides,
) -> Result<ConfigFile, CliError> {
    if let Some(endpoint) = &flags.endpoint {
        config::parse_endpoint(endpoint)?;
        file.endpoint = Some(endpoint.clone());
    }
    if let Some(region) = &flags.region {
        file.region = Some(region.clone());
    }
    let profile = |default: &str| flags.profile.clone().unwrap_or_else(|| default.to_owned());
    if let Some(dir) = &args.from_data_dir {
        let dir = absolute(dir)?;
        file.ca = Some(dir.join("ca.pem"));
        file.credentials = Some(StoredCredentials::File {
            path: dir.join("credentials"),
            profile: profile(DATA_DIR_PROFILE),
        });
    } else if let Some(path) = &args.credentials_file {
        file.credentials = Some(StoredCredentials::File {
            path: absolute(path)?,
            profile: profile("default"),
        });
    } else if let (Some(access_key_id), Some(secret_access_key)) =
        (args.access_key_id, args.secret_access_key)
    {
        if flags.profile.is_some() {
            return Err(CliError::Config(
                "--profile names a profile of a credentials file; it does not go with \
                 --access-key-id"
                    .into(),
            ));
        }
        file.credentials = Some(StoredCredentials::Keys {
            access_key_id,
            secret_access_key,
        });
    } else if let Some(profile) = &flags.profile {
        let path = match file.credentials {
            Some(StoredCredentials::File { path, .. }) => path,
            _ => credentials::default_file().ok_or_else(|| {
                CliError::Config("no credentials file to read --profile from".into())
            })?,
        };
        file.credentials = Some(StoredCredentials::File {
            path,
            profile: profile.clone(),
        });
    }
    if let Some(ca) = &flags.ca {
        file.ca = Some(absolute(ca)?);
    }
    Ok(file)
}

/// What was saved, with the keys described by where they come from (never the secret).
fn summary(path: &Path, file: &ConfigFile) -> Value {
    json!({
        "config": path,
        "endpoint": file.endpoint,
        "region": file.region.as_deref().unwrap_or(config::DEFAULT_REGION),
        "ca": file.ca,
        "credentials": file.credentials.as_ref().map(ToString::to_string),
    })
}

/// Paths are stored absolute: later commands run from other directories.
fn absolute(path: &Path) -> Result<PathBuf, CliError> {
    std::path::absolute(path).map_err(|e| CliError::file(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> ConfigureArgs {
        ConfigureArgs {
            from_data_dir: None,
            credentials_file: None,
            access_key_id: None,
            secret_access_key: None,
        }
    }

    #[test]
    fn a_data_directory_gives_ca_and_keys() {
        let flags = Overrides {
            endpoint: Some("https://127.0.0.1:9443".into()),
            ..Overrides::default()
        };
        let file = apply(
            ConfigFile::default(),
            ConfigureArgs {
                from_data_dir: Some("/srv/ember".into()),
                ..args()
            },
            &flags,
        )
        .unwrap();
        assert_eq!(file.endpoint.as_deref(), Some("https://127.0.0.1:9443"));
        assert_eq!(file.ca.as_deref(), Some(Path::new("/srv/ember/ca.pem")));
        assert_eq!(
            file.credentials,
            Some(StoredCredentials::File {
                path: "/srv/ember/credentials".into(),
                profile: "ember".into()
            })
        );
    }

    #[test]
    fn only_what_is_given_changes() {
        let before = ConfigFile {
            endpoint: Some("https://old".into()),
            region: Some("r".into()),
            ca: Some("/old/ca.pem".into()),
            credentials: Some(StoredCredentials::File {
                path: "/old/credentials".into(),
                profile: "ember".into(),
            }),
        };
        let flags = Overrides {
            profile: Some("other".into()),
            ..Overrides::default()
        };
        let after = apply(before.clone(), args(), &flags).unwrap();
        assert_eq!(after.endpoint, before.endpoint);
        assert_eq!(after.ca, before.ca);
        assert_eq!(
            after.credentials,
            Some(StoredCredentials::File {
                path: "/old/credentials".into(),
                profile: "other".into()
            })
        );
        let unchanged = apply(before.clone(), args(), &Overrides::default()).unwrap();
        assert_eq!(unchanged, before);
    }

    #[test]
    fn literal_keys_are_stored_but_never_shown() {
        let keys = ConfigureArgs {
            access_key_id: Some("AKIAX".into()),
            secret_access_key: Some("very-secret".into()),
            ..args()
        };
        let file = apply(ConfigFile::default(), keys, &Overrides::default()).unwrap();
        let shown = summary(Path::new("/c.json"), &file).to_string();
        assert!(shown.contains("AKIAX"), "{shown}");
        assert!(!shown.contains("very-secret"), "{shown}");
        let with_profile = Overrides {
            profile: Some("p".into()),
            ..Overrides::default()
        };
        let keys = ConfigureArgs {
            access_key_id: Some("AKIAX".into()),
            secret_access_key: Some("s".into()),
            ..args()
        };
        assert!(apply(ConfigFile::default(), keys, &with_profile).is_err());
    }

    #[test]
    fn bad_endpoints_are_refused_before_saving() {
        let flags = Overrides {
            endpoint: Some("127.0.0.1:9443".into()),
            ..Overrides::default()
        };
        assert!(apply(ConfigFile::default(), args(), &flags).is_err());
    }
}
