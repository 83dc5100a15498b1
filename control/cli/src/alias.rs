//! `ember alias …`: named pointers to a function version, optionally sending a share of the
//! invocations to a second version (`/2015-03-31/functions/{f}/aliases…`).

use std::collections::BTreeMap;

use clap::{Args, Subcommand};
use reqwest::Method;
use serde::Serialize;
use serde_json::Value;

use super::client::{segment, Call};
use super::error::CliError;
use super::function::subject;
use super::output::{fields, pairs, rows, table, text};
use super::Ctx;

#[derive(Debug, Subcommand)]
pub enum AliasCommand {
    /// Create an alias for a version
    Create {
        #[command(flatten)]
        alias: AliasName,
        /// The version the alias points to
        #[arg(long, value_name = "V")]
        version: String,
        #[command(flatten)]
        routing: RoutingArgs,
        /// What the alias is for
        #[arg(long)]
        description: Option<String>,
    },
    /// Show an alias
    Get {
        #[command(flatten)]
        alias: AliasName,
    },
    /// List a function's aliases
    List {
        /// The function's name or ARN
        function: String,
        /// Only aliases pointing to this version
        #[arg(long, value_name = "V")]
        version: Option<String>,
    },
    /// Change an alias (only what is given)
    Update {
        #[command(flatten)]
        alias: AliasName,
        /// The version the alias points to
        #[arg(long, value_name = "V")]
        version: Option<String>,
        #[command(flatten)]
        routing: RoutingArgs,
        /// Send every invocation to the alias's version again
        #[arg(long, conflicts_with = "weight")]
        clear_weights: bool,
        /// What the alias is for
        #[arg(long)]
        description: Option<String>,
    },
    /// Delete an alias
    Delete {
        #[command(flatten)]
        alias: AliasName,
    },
}

#[derive(Debug, Args)]
pub struct AliasName {
    /// The function's name or ARN
    function: String,
    /// The alias's name
    alias: String,
}

impl AliasName {
    fn path(&self) -> String {
        format!(
            "/2015-03-31/functions/{}/aliases/{}",
            segment(&self.function),
            segment(&self.alias)
        )
    }

    fn subject(&self) -> String {
        format!("alias '{}' of function '{}'", self.alias, self.function)
    }
}

#[derive(Debug, Args)]
pub struct RoutingArgs {
    /// Send this share (0 to 1) of invocations to another version, e.g. 2=0.1
    #[arg(long, value_name = "VERSION=WEIGHT", value_parser = super::parse_pair::<f64>)]
    weight: Vec<(String, f64)>,
}

/// The body of `CreateAlias` and `UpdateAlias`.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "PascalCase")]
struct AliasRequest {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    routing_config: Option<RoutingConfig>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
struct RoutingConfig {
    additional_version_weights: BTreeMap<String, f64>,
}

impl RoutingArgs {
    /// The routing to send: none when no weight is given, empty when `clear` is set.
    fn config(self, clear: bool) -> Option<RoutingConfig> {
        (clear || !self.weight.is_empty()).then(|| RoutingConfig {
            additional_version_weights: self.weight.into_iter().collect(),
        })
    }
}

pub fn run(command: AliasCommand, ctx: &Ctx) -> Result<(), CliError> {
    let aliases = |function: &str| format!("/2015-03-31/functions/{}/aliases", segment(function));
    let call = match command {
        AliasCommand::Create {
            alias,
            version,
            routing,
            description,
        } => {
            let request = AliasRequest {
                name: Some(alias.alias.clone()),
                function_version: Some(version),
                description,
                routing_config: routing.config(false),
            };
            Call::new(Method::POST, aliases(&alias.function), alias.subject()).json(&request)
        }
        AliasCommand::Get { alias } => Call::new(Method::GET, alias.path(), alias.subject()),
        AliasCommand::List { function, version } => {
            let call = Call::new(Method::GET, aliases(&function), subject(&function))
                .query_opt("FunctionVersion", version.as_deref());
            let list = ctx.client.list_all(call, "Aliases")?;
            ctx.print(&Value::Array(list), list_table)?;
            return Ok(());
        }
        AliasCommand::Update {
            alias,
            version,
            routing,
            clear_weights,
            description,
        } => {
            let request = AliasRequest {
                function_version: version,
                description,
                routing_config: routing.config(clear_weights),
                ..AliasRequest::default()
            };
            Call::new(Method::PUT, alias.path(), alias.subject()).json(&request)
        }
        AliasCommand::Delete { alias } => {
            let what = alias.subject();
            let call = Call::new(Method::DELETE, alias.path(), what.clone());
            ctx.print(&ctx.client.json(call)?, |_| format!("deleted {what}"))?;
            return Ok(());
        }
    };
    ctx.print(&ctx.client.json(call)?, describe)?;
    Ok(())
}

/// An `AliasConfiguration` as a field list.
fn describe(a: &Value) -> String {
    fields(&[
        ("Name", text(a, "Name")),
        ("ARN", text(a, "AliasArn")),
        ("Version", text(a, "FunctionVersion")),
        ("Routing", routing(a)),
        ("Description", text(a, "Description")),
    ])
}

fn list_table(aliases: &Value) -> String {
    let rows: Vec<Vec<String>> = rows(aliases)
        .map(|a| {
            vec![
                text(a, "Name"),
                text(a, "FunctionVersion"),
                routing(a),
                text(a, "Description"),
            ]
        })
        .collect();
    table(&["NAME", "VERSION", "ROUTING", "DESCRIPTION"], &rows)
}

/// The additional version weights, `2=0.1`.
fn routing(a: &Value) -> String {
    pairs(a.pointer("/RoutingConfig/AdditionalVersionWeights"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn routing_is_sent_only_when_asked_for() {
        let none = RoutingArgs { weight: vec![] };
        assert!(none.config(false).is_none());
        let cleared = RoutingArgs { weight: vec![] }.config(true).unwrap();
        assert!(cleared.additional_version_weights.is_empty());
        let request = AliasRequest {
            name: Some("live".into()),
            function_version: Some("1".into()),
            routing_config: RoutingArgs {
                weight: vec![("2".into(), 0.25)],
            }
            .config(false),
            ..AliasRequest::default()
        };
        assert_eq!(
            serde_json::to_value(&request).unwrap(),
            json!({"Name": "live", "FunctionVersion": "1",
                   "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.25}}})
        );
    }

    #[test]
    fn lists_show_routing() {
        let out = list_table(&json!([{"Name": "live", "FunctionVersion": "1",
            "RoutingConfig": {"AdditionalVersionWeights": {"2": 0.25}}}]));
        assert_eq!(
            out,
            "NAME  VERSION  ROUTING  DESCRIPTION\nlive  1        2=0.25   -\n"
        );
    }
}
