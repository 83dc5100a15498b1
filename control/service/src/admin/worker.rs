//! `worker token create|list`, `worker list`, `worker revoke ID`: the operator's hold on
//! who joins the fleet, beside a running service (they work on its database).
//!
//! - `token create` makes a join token (`crate::fleet::join`) and prints it, once, alone
//!   on stdout (`ember worker token create > token` gives a file for `emberd
//!   --token-file`). By default it is good for one registration within an hour, under the
//!   default capacity ceiling.
//! - `list` shows the workers control knows (departed ones until they are forgotten) and
//!   `token list` the tokens, neither with secrets.
//! - `revoke w-…` revokes a worker: control refuses its certificate, its code grants and
//!   its heartbeats from its next heartbeat interval on, sends it nothing more, and the
//!   worker drains and exits. `revoke jt-…` (or `bootstrap`) revokes a join token: no more
//!   registrations with it; workers that joined with it stay until revoked themselves.

use std::io::Write;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::admin::{require, AdminError, DataDirArgs, DatabaseArgs};
use crate::fleet::join::{self, Limits, DEFAULT_CEILING};
use ember_core::clock;
use ember_fleet::messages::Capacity;
use ember_store::join_tokens;
use ember_store::workers::{self as registry, WorkerState};
use ember_store::{Registry, DB_FILE};

/// The `worker` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum WorkerCommand {
    /// Manage join tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// List the workers control knows.
    List(Where),
    /// Revoke worker ID (`w-…`) or join token ID (`jt-…`, `bootstrap`).
    Revoke {
        id: String,
        #[command(flatten)]
        at: Where,
    },
}

/// The `worker token` subcommands.
#[derive(Subcommand, Clone, Debug)]
pub enum TokenCommand {
    /// Create a join token and print it (shown only this once).
    Create(CreateArgs),
    /// List the join tokens (without their secrets).
    List(Where),
}

/// Which service: its data directory, and its database when not the one in there.
#[derive(Args, Clone, Debug)]
pub struct Where {
    #[command(flatten)]
    pub dir: DataDirArgs,
    #[command(flatten)]
    pub database: DatabaseArgs,
}

/// What a new join token allows.
#[derive(Args, Clone, Debug)]
pub struct CreateArgs {
    /// What the token is for, for `token list`.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Registrations it allows: a number, or `unlimited` (a worker image that boots many
    /// workers).
    #[arg(long, value_name = "N|unlimited", default_value = "1", value_parser = parse_uses)]
    pub uses: Uses,
    /// How long it stays valid: seconds, or a number with `s`, `m`, `h` or `d`; or `never`.
    #[arg(long, value_name = "DURATION|never", default_value = "1h", value_parser = parse_lifetime)]
    pub expires_in: Lifetime,
    /// The most vCPUs a worker joining with it may claim.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CEILING.vcpus)]
    pub max_vcpus: u32,
    /// The most guest memory (MiB) a worker joining with it may claim.
    #[arg(long, value_name = "MIB", default_value_t = DEFAULT_CEILING.memory_mib)]
    pub max_memory_mib: u64,
    /// The most environments a worker joining with it may claim.
    #[arg(long, value_name = "N", default_value_t = DEFAULT_CEILING.max_environments)]
    pub max_envs: u32,
    #[command(flatten)]
    pub at: Where,
}

/// How many registrations a token allows (`None`: any number).
#[derive(Clone, Copy, Debug)]
pub struct Uses(pub Option<u64>);

/// How long a token stays valid (`None`: forever).
#[derive(Clone, Copy, Debug)]
pub struct Lifetime(pub Option<Duration>);

fn parse_uses(text: &str) -> Result<Uses, String> {
    match text {
        "unlimited" => Ok(Uses(None)),
        n => match n.parse::<u64>() {
            Ok(n) if n > 0 => Ok(Uses(Some(n))),
            _ => Err(format!("{n:?} is not a positive number or `unlimited`")),
        },
    }
}

fn parse_lifetime(text: &str) -> Result<Lifetime, String> {
    if text == "never" {
        return Ok(Lifetime(None));
    }
    let invalid = || format!("{text:?} is not a duration such as 90s, 30m, 12h or 7d, or `never`");
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().map_err(|_| invalid())?;
    let unit = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return Err(invalid()),
    };
    match number.checked_mul(unit) {
        Some(seconds) if seconds > 0 => Ok(Lifetime(Some(Duration::from_secs(seconds)))),
        _ => Err(invalid()),
    }
}

impl WorkerCommand {
    /// Runs the command, printing its result on `out`.
    pub async fn run(&self, out: &mut dyn Write) -> Result<(), AdminError> {
        let now = clock::now_unix();
        match self {
            WorkerCommand::Token(TokenCommand::Create(args)) => {
                let registry = open(&args.at).await?;
                let limits = Limits {
                    description: args.description.clone(),
                    lifetime: args.expires_in.0,
                    max_uses: args.uses.0,
                    ceiling: Capacity {
                        vcpus: args.max_vcpus,
                        memory_mib: args.max_memory_mib,
                        max_environments: args.max_envs,
                    },
                };
                let created = join::create(registry.pool(), limits, now)
                    .await
                    .map_err(|e| AdminError::Fleet(e.to_string()))?;
                writeln!(out, "{}", *created.token)?;
            }
            WorkerCommand::Token(TokenCommand::List(at)) => {
                let registry = open(at).await?;
                writeln!(
                    out,
                    "ID\tUSES\tEXPIRES\tCEILING (vCPUs/MiB/envs)\tSTATE\tDESCRIPTION"
                )?;
                for token in join_tokens::list(registry.pool()).await.map_err(sql)? {
                    let uses = match token.max_uses {
                        Some(max) => format!("{}/{max}", token.uses),
                        None => format!("{}/unlimited", token.uses),
                    };
                    let expires = token
                        .expires_at
                        .map_or_else(|| "never".to_owned(), |at| at.to_string());
                    let state = token.unusable(now).unwrap_or("usable");
                    let c = &token.ceiling;
                    writeln!(
                        out,
                        "{}\t{uses}\t{expires}\t{}/{}/{}\t{state}\t{}",
                        token.id, c.vcpus, c.memory_mib, c.max_environments, token.description
                    )?;
                }
            }
            WorkerCommand::List(at) => {
                let registry = open(at).await?;
                writeln!(
                    out,
                    "ID\tNAME\tADDRESS\tSTATE\tvCPUs\tMEMORY_MIB\tENVS\tTOKEN\tLEASE_ENDS"
                )?;
                for w in registry::all(registry.pool()).await.map_err(sql)? {
                    let c = &w.capacity;
                    writeln!(
                        out,
                        "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
                        w.id,
                        w.name,
                        w.address,
                        w.state.as_str(),
                        c.vcpus,
                        c.memory_mib,
                        c.max_environments,
                        w.token_id,
                        w.lease_expires_at
                    )?;
                }
            }
            WorkerCommand::Revoke { id, at } => {
                let registry = open(at).await?;
                let pool = registry.pool();
                if id.starts_with("w-") {
                    if !registry::set_state(pool, id, WorkerState::Revoked)
                        .await
                        .map_err(sql)?
                    {
                        return Err(AdminError::Fleet(format!(
                            "no worker {id} that is not revoked already"
                        )));
                    }
                    writeln!(out, "revoked worker {id}")?;
                } else {
                    if !join_tokens::revoke(pool, id, now).await.map_err(sql)? {
                        return Err(AdminError::Fleet(format!(
                            "no join token {id} that is not revoked already"
                        )));
                    }
                    writeln!(out, "revoked join token {id}")?;
                }
            }
        }
        Ok(())
    }
}

async fn open(at: &Where) -> Result<Registry, AdminError> {
    Ok(match &at.database.database_url {
        Some(url) => Registry::open(url).await?,
        None => {
            require(&at.dir.data_dir, DB_FILE)?;
            Registry::open_sqlite(&at.dir.data_dir).await?
        }
    })
}

fn sql(e: sqlx::Error) -> AdminError {
    AdminError::Fleet(format!("registry: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_uses_and_lifetimes() {
        assert_eq!(parse_uses("3").unwrap().0, Some(3));
        assert_eq!(parse_uses("unlimited").unwrap().0, None);
        assert!(parse_uses("0").is_err() && parse_uses("-1").is_err());
        let secs = |text| parse_lifetime(text).unwrap().0.map(|d| d.as_secs());
        assert_eq!(secs("90"), Some(90));
        assert_eq!(secs("30m"), Some(1800));
        assert_eq!(secs("12h"), Some(43_200));
        assert_eq!(secs("7d"), Some(604_800));
        assert_eq!(secs("never"), None);
        for bad in ["", "h", "0s", "1w", "1.5h", "99999999999999999999d"] {
            assert!(parse_lifetime(bad).is_err(), "{bad}");
        }
    }
}
