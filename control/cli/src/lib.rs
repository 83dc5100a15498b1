//! `ember`, the command-line client of ember-control's Lambda API.
//!
//! Each command is one or a few signed HTTPS calls (`client`) with the service's JSON shown
//! as a table or summary, or as it is with `--output json`. Settings come from the file
//! `ember configure` writes, overridden by the global flags (`config`). `ember keys` and
//! `ember worker` are the operator's [`KeysCommand`] and `WorkerCommand`, run locally on a
//! data directory as `ember-control keys` and `ember-control worker` do.
//!
//! Exit status: 0 on success, 1 on failure, 2 on a usage error, 3 when what was asked for
//! does not exist.

mod alias;
mod bench;
mod client;
mod code;
mod concurrency;
mod config;
mod configure;
mod credentials;
mod error;
mod function;
mod invoke;
mod local;
mod logging;
mod logs;
mod output;
mod progress;
mod up;
mod worker;

use std::process::ExitCode;
use std::str::FromStr;

use clap::{Parser, Subcommand};

use ember_control::admin::keys::KeysCommand;
use ember_control::admin::worker::WorkerCommand;

use self::alias::AliasCommand;
use self::bench::BenchCommand;
use self::client::Client;
use self::concurrency::ConcurrencyCommand;
use self::config::{ConfigFile, Overrides};
use self::configure::ConfigureArgs;
use self::error::CliError;
use self::function::FunctionCommand;
use self::invoke::InvokeArgs;
use self::logs::LogsArgs;
use self::output::Format;
use self::up::UpArgs;

/// ember's command-line client: manage functions, aliases and concurrency on an
/// ember-control service.
#[derive(Debug, Parser)]
#[command(
    name = "ember",
    version,
    after_help = "Settings come from `ember configure` (the file $EMBER_CONFIG or \
                  ~/.config/ember/config.json); flags and EMBER_* variables override it, \
                  and AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN override \
                  its keys.\n\nExit status: 0 success, 1 failure, 2 usage error, 3 not found."
)]
struct Cli {
    #[command(flatten)]
    overrides: Overrides,
    /// How to print results
    #[arg(long, global = true, value_enum, default_value_t, help_heading = config::GLOBAL)]
    output: Format,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run control and a local worker on this machine, deploy and invoke an example
    Up(UpArgs),
    /// Save the endpoint, CA, region and keys later commands use
    Configure(ConfigureArgs),
    /// Create, inspect, update, publish and delete functions
    #[command(subcommand)]
    Function(FunctionCommand),
    /// Invoke a function and print its response
    Invoke(InvokeArgs),
    /// Print a function's logs (START, its lines, END, REPORT of each invocation)
    Logs(LogsArgs),
    /// Manage aliases (named versions, with weighted routing)
    #[command(subcommand)]
    Alias(AliasCommand),
    /// Manage reserved and provisioned concurrency
    #[command(subcommand)]
    Concurrency(ConcurrencyCommand),
    /// Manage the master keys of a control data directory (on the service's machine)
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Manage who joins the fleet: join tokens; list and revoke workers (on the service's
    /// machine)
    #[command(subcommand)]
    Worker(WorkerCommand),
    /// The micro-VM zygote, started by the local worker itself (docs/isolation.md)
    #[command(hide = true)]
    Zygote(ember_vmm::process::ZygoteArgs),
    /// Measure the platform
    #[command(subcommand)]
    Bench(BenchCommand),
}

/// What API commands share: the signed client and the output format.
#[derive(Debug)]
struct Ctx {
    client: Client,
    format: Format,
}

impl Ctx {
    /// Prints a result in the chosen format.
    fn print(
        &self,
        value: &serde_json::Value,
        human: impl FnOnce(&serde_json::Value) -> String,
    ) -> Result<(), CliError> {
        self.format.print(value, human)
    }
}

/// Runs the command line of this process; the binary's `main`.
pub fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            e.exit_code()
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    let Cli {
        overrides,
        output,
        command,
    } = cli;
    let overrides = overrides.without_empty();
    match command {
        Command::Up(args) => up::run(args),
        Command::Bench(command) => bench::run(command),
        Command::Configure(args) => configure::run(args, &overrides, output),
        Command::Function(command) => function::run(command, &connect(&overrides, output)?),
        Command::Invoke(args) => {
            let ctx = connect(&overrides, output)?;
            invoke::run(args, &ctx.client, ctx.format)
        }
        Command::Logs(args) => {
            let ctx = connect(&overrides, output)?;
            logs::run(args, &ctx.client, ctx.format)
        }
        Command::Alias(command) => alias::run(command, &connect(&overrides, output)?),
        Command::Concurrency(command) => concurrency::run(command, &connect(&overrides, output)?),
        Command::Keys(command) => Ok(command.run(&mut std::io::stdout().lock())?),
        Command::Worker(command) => worker::run(command),
        Command::Zygote(zygote) => zygote.run(),
    }
}

/// The context of an API command: settings from the file, the flags and the environment.
fn connect(overrides: &Overrides, format: Format) -> Result<Ctx, CliError> {
    let file = ConfigFile::load(&config::path()?)?;
    let env_keys = credentials::from_env(|name| std::env::var(name).ok());
    let settings = config::resolve(&file, overrides, env_keys)?;
    Ok(Ctx {
        client: Client::new(settings)?,
        format,
    })
}

/// Parses `KEY=VALUE` (`--env`, `--weight`).
fn parse_pair<T>(arg: &str) -> Result<(String, T), String>
where
    T: FromStr,
    T::Err: std::fmt::Display,
{
    let (key, value) = arg
        .split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .ok_or_else(|| format!("expected KEY=VALUE, got {arg:?}"))?;
    let value = value
        .parse()
        .map_err(|e| format!("bad value in {arg:?}: {e}"))?;
    Ok((key.to_owned(), value))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_tree_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("ember").chain(args.iter().copied()))
    }

    #[test]
    fn global_flags_go_anywhere() {
        let cli = parse(&[
            "function",
            "list",
            "--output",
            "json",
            "--endpoint",
            "https://h:1",
            "--region",
            "r",
        ])
        .unwrap();
        assert_eq!(cli.output, Format::Json);
        assert_eq!(cli.overrides.endpoint.as_deref(), Some("https://h:1"));
        assert_eq!(cli.overrides.region.as_deref(), Some("r"));
    }

    #[test]
    fn code_is_a_zip_or_a_module_not_both() {
        assert!(parse(&["function", "create", "f"]).is_err());
        assert!(parse(&["function", "create", "f", "--zip", "a", "--wasm", "b"]).is_err());
        let cli = parse(&[
            "function", "create", "f", "--wasm", "f.wasm", "--env", "A=1", "--env", "B=x=y",
        ])
        .unwrap();
        let Command::Function(FunctionCommand::Create(_)) = cli.command else {
            panic!("{cli:?}")
        };
    }

    #[test]
    fn pairs_split_at_the_first_equals_sign() {
        assert_eq!(
            parse_pair::<String>("B=x=y").unwrap(),
            ("B".into(), "x=y".into())
        );
        assert_eq!(parse_pair::<f64>("2=0.1").unwrap(), ("2".into(), 0.1));
        assert!(parse_pair::<String>("novalue").is_err());
        assert!(parse_pair::<String>("=v").is_err());
        assert!(parse_pair::<f64>("2=lots").is_err());
    }

    #[test]
    fn subcommands_take_their_own_flags() {
        assert!(parse(&[
            "alias",
            "create",
            "f",
            "live",
            "--version",
            "1",
            "--weight",
            "2=0.1"
        ])
        .is_ok());
        assert!(parse(&[
            "alias",
            "update",
            "f",
            "live",
            "--weight",
            "2=0.1",
            "--clear-weights"
        ])
        .is_err());
        assert!(parse(&[
            "concurrency",
            "provisioned",
            "put",
            "f",
            "--qualifier",
            "live",
            "--count",
            "2"
        ])
        .is_ok());
        assert!(parse(&["concurrency", "put", "f"]).is_err());
        assert!(parse(&["configure", "--access-key-id", "K"]).is_err());
        assert!(parse(&[
            "configure",
            "--from-data-dir",
            "d",
            "--credentials-file",
            "c"
        ])
        .is_err());
    }
}
