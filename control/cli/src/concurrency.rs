//! `ember concurrency …`: reserved concurrency (a function's cap, `/2017-10-31/…` and
//! `/2019-09-30/…/concurrency`) and provisioned concurrency (initialized environments kept
//! ready for a version or alias, `/2019-09-30/…/provisioned-concurrency`).

use clap::Subcommand;
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::client::{segment, Call};
use super::error::CliError;
use super::function::subject;
use super::output::{fields, rows, table, text};
use super::Ctx;

#[derive(Debug, Subcommand)]
pub enum ConcurrencyCommand {
    /// Reserve concurrency for a function; invocations over it are throttled
    Put {
        /// The function's name or ARN
        function: String,
        /// Concurrent executions to reserve
        #[arg(long, value_name = "N")]
        reserved: u32,
    },
    /// Show a function's reserved concurrency
    Get {
        /// The function's name or ARN
        function: String,
    },
    /// Remove a function's reservation
    Delete {
        /// The function's name or ARN
        function: String,
    },
    /// Provisioned concurrency of a version or alias
    #[command(subcommand)]
    Provisioned(ProvisionedCommand),
}

#[derive(Debug, Subcommand)]
pub enum ProvisionedCommand {
    /// Keep N environments of a version or alias initialized
    Put {
        /// The function's name or ARN
        function: String,
        /// A published version or an alias
        #[arg(long)]
        qualifier: String,
        /// Environments to keep ready
        #[arg(long, value_name = "N")]
        count: u32,
    },
    /// Show the provisioned concurrency of a version or alias
    Get {
        /// The function's name or ARN
        function: String,
        #[arg(long)]
        qualifier: String,
    },
    /// List a function's provisioned concurrency settings
    List {
        /// The function's name or ARN
        function: String,
    },
    /// Stop provisioning a version or alias
    Delete {
        /// The function's name or ARN
        function: String,
        #[arg(long)]
        qualifier: String,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Reserved {
    reserved_concurrent_executions: u32,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Provisioned {
    provisioned_concurrent_executions: u32,
}

pub fn run(command: ConcurrencyCommand, ctx: &Ctx) -> Result<(), CliError> {
    let path =
        |date: &str, function: &str| format!("/{date}/functions/{}/concurrency", segment(function));
    match command {
        ConcurrencyCommand::Put { function, reserved } => {
            let call = Call::new(
                Method::PUT,
                path("2017-10-31", &function),
                subject(&function),
            )
            .json(&Reserved {
                reserved_concurrent_executions: reserved,
            });
            ctx.print(&ctx.client.json(call)?, |v| reserved_text(&function, v))?;
        }
        ConcurrencyCommand::Get { function } => {
            let call = Call::new(
                Method::GET,
                path("2019-09-30", &function),
                subject(&function),
            );
            ctx.print(&ctx.client.json(call)?, |v| reserved_text(&function, v))?;
        }
        ConcurrencyCommand::Delete { function } => {
            let call = Call::new(
                Method::DELETE,
                path("2017-10-31", &function),
                subject(&function),
            );
            ctx.print(&ctx.client.json(call)?, |_| {
                format!("removed the reserved concurrency of function '{function}'")
            })?;
        }
        ConcurrencyCommand::Provisioned(command) => provisioned(command, ctx)?,
    }
    Ok(())
}

fn provisioned(command: ProvisionedCommand, ctx: &Ctx) -> Result<(), CliError> {
    let path = |function: &str| {
        format!(
            "/2019-09-30/functions/{}/provisioned-concurrency",
            segment(function)
        )
    };
    let config_subject = |function: &str, qualifier: &str| {
        format!("provisioned concurrency of function '{function}:{qualifier}'")
    };
    match command {
        ProvisionedCommand::Put {
            function,
            qualifier,
            count,
        } => {
            let call = Call::new(
                Method::PUT,
                path(&function),
                config_subject(&function, &qualifier),
            )
            .query("Qualifier", qualifier)
            .json(&Provisioned {
                provisioned_concurrent_executions: count,
            });
            ctx.print(&ctx.client.json(call)?, describe)?;
        }
        ProvisionedCommand::Get {
            function,
            qualifier,
        } => {
            let call = Call::new(
                Method::GET,
                path(&function),
                config_subject(&function, &qualifier),
            )
            .query("Qualifier", qualifier);
            ctx.print(&ctx.client.json(call)?, describe)?;
        }
        ProvisionedCommand::List { function } => {
            // `List=ALL` is part of the operation's path in Lambda's API model.
            let call = Call::new(
                Method::GET,
                format!("{}?List=ALL", path(&function)),
                subject(&function),
            );
            let list = ctx.client.list_all(call, "ProvisionedConcurrencyConfigs")?;
            ctx.print(&Value::Array(list), list_table)?;
        }
        ProvisionedCommand::Delete {
            function,
            qualifier,
        } => {
            let what = config_subject(&function, &qualifier);
            let call = Call::new(Method::DELETE, path(&function), what.clone())
                .query("Qualifier", qualifier);
            ctx.print(&ctx.client.json(call)?, |_| format!("deleted {what}"))?;
        }
    }
    Ok(())
}

/// `GetFunctionConcurrency` answers `{}` when nothing is reserved.
fn reserved_text(function: &str, v: &Value) -> String {
    match v
        .get("ReservedConcurrentExecutions")
        .and_then(Value::as_u64)
    {
        Some(n) => format!("function '{function}' has {n} reserved concurrent executions"),
        None => format!("function '{function}' has no reserved concurrency"),
    }
}

/// A provisioned concurrency config as a field list.
fn describe(p: &Value) -> String {
    fields(&[
        (
            "Requested",
            text(p, "RequestedProvisionedConcurrentExecutions"),
        ),
        (
            "Allocated",
            text(p, "AllocatedProvisionedConcurrentExecutions"),
        ),
        (
            "Available",
            text(p, "AvailableProvisionedConcurrentExecutions"),
        ),
        ("Status", text(p, "Status")),
        ("Reason", text(p, "StatusReason")),
        ("Last modified", text(p, "LastModified")),
    ])
}

fn list_table(configs: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(configs)
        .map(|p| {
            vec![
                qualifier(&text(p, "FunctionArn")),
                text(p, "RequestedProvisionedConcurrentExecutions"),
                text(p, "AllocatedProvisionedConcurrentExecutions"),
                text(p, "AvailableProvisionedConcurrentExecutions"),
                text(p, "Status"),
                text(p, "LastModified"),
            ]
        })
        .collect();
    table(
        &[
            "QUALIFIER",
            "REQUESTED",
            "ALLOCATED",
            "AVAILABLE",
            "STATUS",
            "LAST-MODIFIED",
        ],
        &rows,
    )
}

/// The qualifier at the end of a qualified function ARN (`…:function:f:live` → `live`).
fn qualifier(arn: &str) -> String {
    let parts: Vec<&str> = arn.split(':').collect();
    match parts.as_slice() {
        [.., "function", _name, qualifier] => (*qualifier).to_owned(),
        _ => "-".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reserved_concurrency_reads_both_answers() {
        assert_eq!(
            reserved_text("f", &json!({"ReservedConcurrentExecutions": 5})),
            "function 'f' has 5 reserved concurrent executions"
        );
        assert_eq!(
            reserved_text("f", &json!({})),
            "function 'f' has no reserved concurrency"
        );
    }

    #[test]
    fn lists_name_the_qualifier() {
        assert_eq!(
            qualifier("arn:aws:lambda:local:123456789012:function:f:live"),
            "live"
        );
        assert_eq!(qualifier("arn:aws:lambda:local:1:function:f"), "-");
        let out = list_table(&json!([{
            "FunctionArn": "arn:aws:lambda:local:123456789012:function:f:2",
            "RequestedProvisionedConcurrentExecutions": 3,
            "Status": "IN_PROGRESS"
        }]));
        assert!(
            out.lines().nth(1).unwrap().starts_with("2          3"),
            "{out}"
        );
    }
}
