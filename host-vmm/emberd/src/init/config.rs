//! Init mode's settings: `ember.KEY=VALUE` parameters on the kernel command line and
//! `KEY=VALUE` lines in the image's config file, with the same keys. The command line wins
//! for every key but the secret ones: anything on it is readable by every process
//! (`/proc/cmdline`) and by whoever sees the boot loader's configuration, so the bootstrap
//! token is taken from the file only. Keys init mode does not use itself are `emberd
//! serve` flags (`state_dir` is `--state-dir`), checked by clap, so a new serve flag needs
//! no change here.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::net::settings::NetSettings;

/// Where the config file is, unless `ember.config=PATH` says otherwise.
pub const DEFAULT_FILE: &str = "/etc/ember/emberd.conf";

/// The prefix of ember's parameters on the kernel command line.
const PREFIX: &str = "ember.";

/// Keys that hold secrets: read from the file only.
const SECRET_KEYS: &[&str] = &["token"];

/// Keys that init mode itself uses; every other key is an `emberd serve` flag.
const INIT_KEYS: &[&str] = &[
    "config",
    "selftest",
    "on_exit",
    "fatal_delay",
    "modules",
    "log",
    "token",
    "net",
    "net_iface",
    "net_gateway",
    "net_dns",
];

/// What to do once the worker or the self-test has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OnExit {
    PowerOff,
    Reboot,
}

/// Init mode's settings, merged from both sources.
#[derive(Debug, PartialEq)]
pub struct Settings {
    /// Run the self-test instead of the worker (`selftest=1`).
    pub selftest: bool,
    /// `on_exit=poweroff|reboot` (default poweroff).
    pub on_exit: OnExit,
    /// How long a fatal error stays on the console before the machine goes down
    /// (`fatal_delay=SECONDS`, default 10).
    pub fatal_delay: Duration,
    /// The modules to load (`modules=a,b,c`); `None`: every module the image ships.
    pub modules: Option<Vec<String>>,
    /// The console's log level (`log=info`).
    pub log: log::LevelFilter,
    /// The bootstrap token, from the file only.
    pub token: Option<String>,
    /// The interface to bring up besides `lo` (`net=...`), if any.
    pub net: Option<NetSettings>,
    /// `emberd serve` flags by key (`state_dir` → `--state-dir`).
    pub serve: BTreeMap<String, String>,
    /// Lines to print about the configuration (ignored secrets on the command line).
    pub warnings: Vec<String>,
}

/// Why the configuration cannot be used.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("{file} line {line}: expected KEY=VALUE, found {text:?}")]
    Syntax {
        file: String,
        line: usize,
        text: String,
    },
    #[error("{file} line {line}: {key} is set twice")]
    Twice {
        file: String,
        line: usize,
        key: String,
    },
    #[error("{key}={value:?}: {expected}")]
    Value {
        key: String,
        value: String,
        expected: &'static str,
    },
}

/// One `KEY=VALUE` setting and where it came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub key: String,
    pub value: String,
}

/// The `ember.*` parameters of a kernel command line, in order. Double quotes group a
/// value with spaces, as the kernel's own parser does; everything after `--` belongs to
/// init's argv and is not a parameter.
pub fn parse_cmdline(cmdline: &str) -> Vec<Entry> {
    let mut entries = Vec::new();
    for word in split_words(cmdline) {
        if word == "--" {
            break;
        }
        let Some(rest) = word.strip_prefix(PREFIX) else {
            continue;
        };
        let (key, value) = rest.split_once('=').unwrap_or((rest, ""));
        entries.push(Entry {
            key: key.to_owned(),
            value: value.to_owned(),
        });
    }
    entries
}

/// Words separated by whitespace; a double-quoted part keeps its spaces and loses its
/// quotes.
fn split_words(text: &str) -> Vec<String> {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut quoted = false;
    let mut in_word = false;
    for c in text.chars() {
        match c {
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            c => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        words.push(word);
    }
    words
}

/// The settings of a config file: `KEY=VALUE` lines (spaces around `=` allowed), blank
/// lines and `#` comments; a key set twice is an error. `file` names it in errors.
pub fn parse_file(file: &str, text: &str) -> Result<Vec<Entry>, ConfigError> {
    let mut entries = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        match line.split_once('=') {
            Some((key, _)) if entries.iter().any(|e: &Entry| e.key == key.trim()) => {
                return Err(ConfigError::Twice {
                    file: file.to_owned(),
                    line: index + 1,
                    key: key.trim().to_owned(),
                })
            }
            Some((key, value)) if !key.trim().is_empty() => entries.push(Entry {
                key: key.trim().to_owned(),
                value: value.trim().to_owned(),
            }),
            _ => {
                return Err(ConfigError::Syntax {
                    file: file.to_owned(),
                    line: index + 1,
                    text: line.to_owned(),
                })
            }
        }
    }
    Ok(entries)
}

/// The config file's path: `ember.config=PATH` on the command line, else [`DEFAULT_FILE`].
pub fn file_path(cmdline: &[Entry]) -> PathBuf {
    cmdline
        .iter()
        .rev()
        .find(|entry| entry.key == "config")
        .map_or_else(
            || PathBuf::from(DEFAULT_FILE),
            |entry| entry.value.clone().into(),
        )
}

/// Merges the file's settings with the command line's: later entries win, the command
/// line comes after the file, and secrets on the command line are ignored with a warning.
pub fn merge(file: &[Entry], cmdline: &[Entry]) -> Result<Settings, ConfigError> {
    let mut values = BTreeMap::new();
    let mut warnings = Vec::new();
    for entry in file {
        values.insert(entry.key.clone(), entry.value.clone());
    }
    for entry in cmdline {
        if SECRET_KEYS.contains(&entry.key.as_str()) {
            warnings.push(format!(
                "ignoring ember.{} on the kernel command line: every process can read it there; put it in the config file",
                entry.key
            ));
            continue;
        }
        values.insert(entry.key.clone(), entry.value.clone());
    }
    let selftest = match values.get("selftest").map(String::as_str) {
        None | Some("0") => false,
        Some("1") => true,
        Some(other) => return Err(invalid("selftest", other, "expected 0 or 1")),
    };
    let on_exit = match values.get("on_exit").map(String::as_str) {
        None | Some("poweroff") => OnExit::PowerOff,
        Some("reboot") => OnExit::Reboot,
        Some(other) => return Err(invalid("on_exit", other, "expected poweroff or reboot")),
    };
    let fatal_delay = match values.get("fatal_delay") {
        None => Duration::from_secs(10),
        Some(seconds) => seconds
            .parse::<f64>()
            .ok()
            .filter(|s| s.is_finite() && *s >= 0.0)
            .map(Duration::from_secs_f64)
            .ok_or_else(|| {
                invalid(
                    "fatal_delay",
                    seconds,
                    "expected a number of seconds, 0 or more",
                )
            })?,
    };
    let modules = values.get("modules").map(|list| {
        list.split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
            .map(str::to_owned)
            .collect()
    });
    let log = match values.get("log") {
        None => log::LevelFilter::Info,
        Some(level) => level.parse().map_err(|_| {
            invalid(
                "log",
                level,
                "expected off, error, warn, info, debug or trace",
            )
        })?,
    };
    let net = super::net::settings::parse(&values)?;
    let token = values.get("token").cloned();
    let serve = values
        .into_iter()
        .filter(|(key, _)| !INIT_KEYS.contains(&key.as_str()))
        .collect();
    Ok(Settings {
        selftest,
        on_exit,
        fatal_delay,
        modules,
        log,
        token,
        net,
        serve,
        warnings,
    })
}

fn invalid(key: &str, value: &str, expected: &'static str) -> ConfigError {
    ConfigError::Value {
        key: key.to_owned(),
        value: value.to_owned(),
        expected,
    }
}

/// `emberd serve`'s argv for `serve` flags by key (`state_dir` → `--state-dir=VALUE`),
/// plus the token file.
pub fn serve_argv(serve: &BTreeMap<String, String>, token_file: &std::path::Path) -> Vec<String> {
    let mut argv = vec!["emberd serve".to_owned()];
    argv.extend(
        serve
            .iter()
            .map(|(key, value)| format!("--{}={value}", key.replace('_', "-"))),
    );
    argv.push(format!("--token-file={}", token_file.display()));
    argv
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, value: &str) -> Entry {
        Entry {
            key: key.into(),
            value: value.into(),
        }
    }

    #[test]
    fn the_command_line_gives_only_ember_parameters_before_the_double_dash() {
        let entries = parse_cmdline(
            "console=ttyS0 ember.control=https://10.0.0.1:9444 quiet ember.name=\"rack 4\" ember.selftest -- ember.log=debug\n",
        );
        assert_eq!(
            entries,
            [
                entry("control", "https://10.0.0.1:9444"),
                entry("name", "rack 4"),
                entry("selftest", ""),
            ]
        );
    }

    #[test]
    fn the_file_takes_comments_blank_lines_and_spaces_around_the_equals_sign() {
        let text = "# worker\n\ncontrol = https://c:9444\n  token=abc=def  \n";
        assert_eq!(
            parse_file("f", text).unwrap(),
            [
                entry("control", "https://c:9444"),
                entry("token", "abc=def")
            ]
        );
        assert_eq!(
            parse_file("/etc/x", "control\n"),
            Err(ConfigError::Syntax {
                file: "/etc/x".into(),
                line: 1,
                text: "control".into()
            })
        );
        assert_eq!(
            parse_file("f", "name=a\n# again\nname = b\n")
                .unwrap_err()
                .to_string(),
            "f line 3: name is set twice"
        );
    }

    #[test]
    fn the_command_line_overrides_the_file_but_never_gives_the_token() {
        let file = [
            entry("control", "https://file:9444"),
            entry("token", "secret"),
            entry("on_exit", "reboot"),
            entry("state_dir", "/var/ember"),
        ];
        let cmdline = [
            entry("control", "https://cmdline:9444"),
            entry("token", "leaked"),
            entry("fatal_delay", "0"),
        ];
        let settings = merge(&file, &cmdline).unwrap();
        assert_eq!(settings.token.as_deref(), Some("secret"));
        assert_eq!(settings.on_exit, OnExit::Reboot);
        assert_eq!(settings.fatal_delay, Duration::ZERO);
        assert_eq!(
            settings.serve,
            BTreeMap::from([
                ("control".to_owned(), "https://cmdline:9444".to_owned()),
                ("state_dir".to_owned(), "/var/ember".to_owned()),
            ])
        );
        assert_eq!(settings.warnings.len(), 1);
        assert!(settings.warnings[0].contains("ember.token"));
    }

    #[test]
    fn defaults_and_bad_values() {
        let settings = merge(&[], &[]).unwrap();
        assert!(!settings.selftest);
        assert_eq!(settings.on_exit, OnExit::PowerOff);
        assert_eq!(settings.fatal_delay, Duration::from_secs(10));
        assert_eq!(settings.modules, None);
        assert_eq!(settings.log, log::LevelFilter::Info);
        assert!(settings.token.is_none() && settings.serve.is_empty());
        assert_eq!(settings.net, None);

        let err = merge(&[], &[entry("on_exit", "halt")]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "on_exit=\"halt\": expected poweroff or reboot"
        );
        assert!(merge(&[], &[entry("fatal_delay", "-1")]).is_err());
        assert!(merge(&[], &[entry("selftest", "yes")]).is_err());
        let modules = merge(&[], &[entry("modules", "kvm_amd, vsock,,")]).unwrap();
        assert_eq!(
            modules.modules,
            Some(vec!["kvm_amd".to_owned(), "vsock".to_owned()])
        );
    }

    #[test]
    fn network_keys_belong_to_init_not_to_serve() {
        let file = [
            entry("net", "10.0.0.5/24"),
            entry("net_gateway", "10.0.0.1"),
        ];
        let cmdline = [entry("net", "dhcp"), entry("net_iface", "eth1")];
        let settings = merge(&file, &cmdline).unwrap();
        let net = settings.net.unwrap();
        assert_eq!(net.mode, super::super::net::settings::Mode::Dhcp);
        assert_eq!(net.iface.as_deref(), Some("eth1"));
        assert_eq!(net.gateway, Some("10.0.0.1".parse().unwrap()));
        assert!(settings.serve.is_empty());
        assert!(merge(&[], &[entry("net", "dchp")]).is_err());
    }

    #[test]
    fn the_config_file_path_comes_from_the_command_line() {
        assert_eq!(file_path(&[]), PathBuf::from(DEFAULT_FILE));
        assert_eq!(
            file_path(&[entry("config", "/a"), entry("config", "/b")]),
            PathBuf::from("/b")
        );
    }
}
