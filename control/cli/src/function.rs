//! `ember function …`: create, inspect, update, publish and delete functions
//! (`/2015-03-31/functions…`).

use std::collections::BTreeMap;

use base64::Engine;
use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::client::{segment, Call};
use super::code::CodeArgs;
use super::error::CliError;
use super::output::{fields, rows, table, text};
use super::Ctx;

/// The execution role of a function created without `--role`: `ember-default` in the
/// caller's account. Lambda requires a role, and ember accepts only one of the caller's own
/// account, so without the account there is no default worth sending.
pub(super) fn default_role(account: Option<&str>) -> Result<String, CliError> {
    match account {
        Some(account) => Ok(format!("arn:aws:iam::{account}:role/ember-default")),
        None => Err(CliError::Config(
            "no --role given, and the credentials do not say which account they belong to: \
             pass --role arn:aws:iam::ACCOUNT:role/NAME, or add `aws_account_id = ACCOUNT` to \
             the credentials profile (or set AWS_ACCOUNT_ID with AWS_ACCESS_KEY_ID)"
                .into(),
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum FunctionCommand {
    /// Create a function from a ZIP package or a .wasm module
    Create(CreateArgs),
    /// Show a function's configuration (of $LATEST, or of a version or alias)
    Get {
        /// The function's name or ARN
        name: String,
        /// A version number or alias
        #[arg(long)]
        qualifier: Option<String>,
    },
    /// List functions
    List {
        /// List every published version too, not just $LATEST
        #[arg(long)]
        all_versions: bool,
    },
    /// Replace a function's code
    UpdateCode {
        /// The function's name or ARN
        name: String,
        #[command(flatten)]
        code: CodeArgs,
        /// Publish a version with the new code
        #[arg(long)]
        publish: bool,
    },
    /// Change a function's settings (only those given)
    UpdateConfig {
        /// The function's name or ARN
        name: String,
        #[command(flatten)]
        settings: SettingsArgs,
        /// Remove every environment variable
        #[arg(long, conflicts_with = "env")]
        clear_env: bool,
    },
    /// Delete a function, or only one of its versions
    Delete {
        /// The function's name or ARN
        name: String,
        /// The version to delete (default: the whole function)
        #[arg(long)]
        qualifier: Option<String>,
    },
    /// Publish $LATEST as a new version
    Publish {
        /// The function's name or ARN
        name: String,
        /// The version's description
        #[arg(long)]
        description: Option<String>,
    },
    /// List a function's versions
    Versions {
        /// The function's name or ARN
        name: String,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    /// The function's name or ARN
    name: String,
    #[command(flatten)]
    code: CodeArgs,
    #[command(flatten)]
    settings: SettingsArgs,
    /// Publish version 1 as well
    #[arg(long)]
    publish: bool,
}

/// The settings `create` and `update-config` share.
#[derive(Debug, Args)]
pub struct SettingsArgs {
    /// A reactor's handler export (default "handle")
    #[arg(long)]
    handler: Option<String>,
    /// Memory in MiB
    #[arg(long, value_name = "MiB")]
    memory: Option<u32>,
    /// Timeout in seconds (1 to 900)
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<u32>,
    /// An environment variable; repeat for more. Replaces all variables on update
    #[arg(long, value_name = "KEY=VALUE", value_parser = super::parse_pair::<String>)]
    env: Vec<(String, String)>,
    /// The execution role's ARN, arn:aws:iam::ACCOUNT:role/NAME (on create, default
    /// role/ember-default in the account named by the credentials' aws_account_id or
    /// AWS_ACCOUNT_ID)
    #[arg(long, value_name = "ARN")]
    role: Option<String>,
    /// What the function is for
    #[arg(long)]
    description: Option<String>,
}

/// The configuration fields of `CreateFunction` and `UpdateFunctionConfiguration`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Settings {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    handler: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    timeout: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    memory_size: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    environment: Option<Environment>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct Environment {
    variables: BTreeMap<String, String>,
}

impl SettingsArgs {
    /// The request fields; `clear_env` sends an empty set of variables.
    fn into_settings(self, clear_env: bool) -> Settings {
        let environment = (clear_env || !self.env.is_empty()).then(|| Environment {
            variables: self.env.into_iter().collect(),
        });
        Settings {
            role: self.role,
            handler: self.handler,
            description: self.description,
            timeout: self.timeout,
            memory_size: self.memory,
            environment,
        }
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct CreateRequest {
    function_name: String,
    #[serde(flatten)]
    settings: Settings,
    code: ZipCode,
    publish: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct ZipCode {
    zip_file: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct UpdateCodeRequest {
    zip_file: String,
    publish: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct PublishRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
}

pub fn run(command: FunctionCommand, ctx: &Ctx) -> Result<(), CliError> {
    match command {
        FunctionCommand::Create(args) => {
            let mut settings = args.settings.into_settings(false);
            if settings.role.is_none() {
                settings.role = Some(default_role(ctx.client.account_id())?);
            }
            let request = CreateRequest {
                function_name: args.name.clone(),
                settings,
                code: ZipCode {
                    zip_file: base64(&args.code.package()?),
                },
                publish: args.publish,
            };
            let call = Call::new(
                Method::POST,
                "/2015-03-31/functions".into(),
                subject(&args.name),
            );
            ctx.print(&ctx.client.json(call.json(&request))?, describe)?;
        }
        FunctionCommand::Get { name, qualifier } => {
            let call = Call::new(Method::GET, path(&name, ""), subject_q(&name, &qualifier))
                .query_opt("Qualifier", qualifier.as_deref());
            ctx.print(&ctx.client.json(call)?, describe_function)?;
        }
        FunctionCommand::List { all_versions } => {
            let mut call = Call::new(Method::GET, "/2015-03-31/functions".into(), "functions");
            if all_versions {
                call = call.query("FunctionVersion", "ALL");
            }
            let functions = ctx.client.list_all(call, "Functions")?;
            ctx.print(&Value::Array(functions), list_table)?;
        }
        FunctionCommand::UpdateCode {
            name,
            code,
            publish,
        } => {
            let request = UpdateCodeRequest {
                zip_file: base64(&code.package()?),
                publish,
            };
            let call = Call::new(Method::PUT, path(&name, "/code"), subject(&name));
            ctx.print(&ctx.client.json(call.json(&request))?, describe)?;
        }
        FunctionCommand::UpdateConfig {
            name,
            settings,
            clear_env,
        } => {
            let request = settings.into_settings(clear_env);
            let call = Call::new(Method::PUT, path(&name, "/configuration"), subject(&name));
            ctx.print(&ctx.client.json(call.json(&request))?, describe)?;
        }
        FunctionCommand::Delete { name, qualifier } => {
            let what = subject_q(&name, &qualifier);
            let call = Call::new(Method::DELETE, path(&name, ""), what.clone())
                .query_opt("Qualifier", qualifier.as_deref());
            ctx.print(&ctx.client.json(call)?, |_| format!("deleted {what}"))?;
        }
        FunctionCommand::Publish { name, description } => {
            let call = Call::new(Method::POST, path(&name, "/versions"), subject(&name));
            let published = ctx
                .client
                .json(call.json(&PublishRequest { description }))?;
            ctx.print(&published, describe)?;
        }
        FunctionCommand::Versions { name } => {
            let call = Call::new(Method::GET, path(&name, "/versions"), subject(&name));
            let versions = ctx.client.list_all(call, "Versions")?;
            ctx.print(&Value::Array(versions), versions_table)?;
        }
    }
    Ok(())
}

/// `/2015-03-31/functions/{name}{rest}`.
fn path(name: &str, rest: &str) -> String {
    format!("/2015-03-31/functions/{}{rest}", segment(name))
}

/// How errors name a function.
pub fn subject(name: &str) -> String {
    format!("function '{name}'")
}

/// How errors name a function at a qualifier (`name:qualifier`, as Lambda writes it).
pub fn subject_q(name: &str, qualifier: &Option<String>) -> String {
    match qualifier {
        Some(q) => format!("function '{name}:{q}'"),
        None => subject(name),
    }
}

fn base64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// A `FunctionConfiguration` as a field list. Environment variables are listed by name
/// only: their values often hold secrets (`--output json` shows them).
fn describe(c: &Value) -> String {
    let variables = c
        .pointer("/Environment/Variables")
        .and_then(Value::as_object)
        .filter(|vars| !vars.is_empty())
        .map(|vars| vars.keys().cloned().collect::<Vec<_>>().join(", "))
        .unwrap_or_else(|| "-".into());
    fields(&[
        ("Name", text(c, "FunctionName")),
        ("ARN", text(c, "FunctionArn")),
        ("Version", text(c, "Version")),
        ("Description", text(c, "Description")),
        ("State", text(c, "State")),
        ("Handler", text(c, "Handler")),
        ("Runtime", text(c, "Runtime")),
        ("Memory", unit(c, "MemorySize", "MiB")),
        ("Timeout", unit(c, "Timeout", "s")),
        ("Role", text(c, "Role")),
        ("Environment", variables),
        ("Code size", unit(c, "CodeSize", "bytes")),
        ("Code SHA-256", text(c, "CodeSha256")),
        ("Last modified", text(c, "LastModified")),
    ])
}

/// A `GetFunction` response: the configuration and the reserved concurrency.
fn describe_function(response: &Value) -> String {
    let config = response.get("Configuration").unwrap_or(&Value::Null);
    let reserved = response
        .pointer("/Concurrency/ReservedConcurrentExecutions")
        .map_or_else(|| "-".into(), Value::to_string);
    let mut out = describe(config);
    out.push_str(&fields(&[("Reserved concurrency", reserved)]));
    out
}

fn list_table(functions: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(functions)
        .map(|f| {
            vec![
                text(f, "FunctionName"),
                text(f, "Version"),
                text(f, "MemorySize"),
                text(f, "Timeout"),
                text(f, "CodeSize"),
                text(f, "LastModified"),
            ]
        })
        .collect();
    table(
        &[
            "NAME",
            "VERSION",
            "MEMORY(MiB)",
            "TIMEOUT(s)",
            "CODE-SIZE",
            "LAST-MODIFIED",
        ],
        &rows,
    )
}

fn versions_table(versions: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(versions)
        .map(|v| {
            vec![
                text(v, "Version"),
                text(v, "CodeSha256"),
                text(v, "LastModified"),
                text(v, "Description"),
            ]
        })
        .collect();
    table(
        &["VERSION", "CODE-SHA256", "LAST-MODIFIED", "DESCRIPTION"],
        &rows,
    )
}

/// A number with its unit, or `-`.
fn unit(c: &Value, key: &str, unit: &str) -> String {
    c.get(key)
        .and_then(Value::as_u64)
        .map_or_else(|| "-".into(), |n| format!("{n} {unit}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn settings(env: Vec<(&str, &str)>) -> SettingsArgs {
        SettingsArgs {
            handler: None,
            memory: Some(256),
            timeout: None,
            env: env.into_iter().map(|(k, v)| (k.into(), v.into())).collect(),
            role: None,
            description: None,
        }
    }

    #[test]
    fn requests_carry_only_what_was_given() {
        let request = CreateRequest {
            function_name: "f".into(),
            settings: settings(vec![("K", "v")]).into_settings(false),
            code: ZipCode {
                zip_file: "UEs=".into(),
            },
            publish: true,
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"FunctionName": "f", "MemorySize": 256,
                   "Environment": {"Variables": {"K": "v"}},
                   "Code": {"ZipFile": "UEs="}, "Publish": true})
        );
        assert_eq!(
            serde_json::to_value(settings(vec![]).into_settings(false)).unwrap(),
            json!({"MemorySize": 256})
        );
        assert_eq!(
            serde_json::to_value(settings(vec![]).into_settings(true)).unwrap(),
            json!({"MemorySize": 256, "Environment": {"Variables": {}}})
        );
    }

    #[test]
    fn summaries_hide_environment_values() {
        let out = describe(&json!({
            "FunctionName": "f", "MemorySize": 128, "Timeout": 3,
            "Environment": {"Variables": {"TOKEN": "hunter2", "MODE": "x"}}
        }));
        assert!(out.contains("Memory       128 MiB"), "{out}");
        assert!(out.contains("Environment  MODE, TOKEN"), "{out}");
        assert!(!out.contains("hunter2"));
        assert!(!out.contains("Description"));
    }

    #[test]
    fn the_default_role_needs_the_account() {
        assert_eq!(
            default_role(Some("123456789012")).unwrap(),
            "arn:aws:iam::123456789012:role/ember-default"
        );
        let err = default_role(None).unwrap_err().to_string();
        assert!(
            err.contains("--role") && err.contains("aws_account_id"),
            "{err}"
        );
    }

    #[test]
    fn subjects_name_what_was_asked_for() {
        assert_eq!(subject_q("f", &None), "function 'f'");
        assert_eq!(subject_q("f", &Some("live".into())), "function 'f:live'");
    }
}
