//! `ember up`: the whole platform on this machine ([`crate::local`]), the bundled `hello`
//! example deployed and invoked through the Lambda API, then serving until Ctrl-C. A
//! second run reuses the data directory: same CA, keys and functions.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Args;
use reqwest::Method;
use serde_json::json;

use super::client::{segment, Call, Client};
use super::config::{self, ConfigFile, Settings, StoredCredentials};
use super::error::CliError;
use super::invoke::{invoke, Invoked};
use super::{code, credentials, function};
use crate::local::{self, LocalOptions};
use ember_control::metrics::http::MetricsListen;

/// The profile ember-control writes the admin's keys under.
const PROFILE: &str = "ember";
/// The example `ember up` deploys.
const EXAMPLE: &str = "hello";

#[derive(Debug, Args)]
pub struct UpArgs {
    /// The data directory: registry, keys, code, CA and credentials (as `ember-control
    /// serve --data-dir`)
    #[arg(
        long,
        value_name = "DIR",
        env = "EMBER_DATA_DIR",
        default_value = "ember-data"
    )]
    data_dir: PathBuf,
    /// Where the Lambda API listens (HTTPS)
    #[arg(long, default_value = "127.0.0.1:9443")]
    listen: SocketAddr,
    /// Where workers join (mutual TLS)
    #[arg(long, default_value = "127.0.0.1:9444")]
    fleet_listen: SocketAddr,
    /// Where the local worker serves control (mutual TLS); port 0 picks a free one
    #[arg(long, default_value = "127.0.0.1:0")]
    worker_listen: SocketAddr,
    /// Where control serves Prometheus metrics (plain HTTP), or `off`
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:9464")]
    metrics_listen: MetricsListen,
    /// Where the local worker serves Prometheus metrics (plain HTTP), or `off`
    #[arg(long, value_name = "ADDR|off", default_value = "127.0.0.1:9465")]
    worker_metrics_listen: MetricsListen,
}

pub fn run(args: UpArgs) -> Result<(), CliError> {
    super::logging::init("warn");
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Config(format!("starting the async runtime: {e}")))?;
    runtime.block_on(up(args))
}

async fn up(args: UpArgs) -> Result<(), CliError> {
    // Installed first: Ctrl-C while starting still stops ember gracefully, once it is up.
    let stop = ember_control::server::shutdown_signal();
    let started = Instant::now();
    let platform = local::start(LocalOptions {
        data_dir: args.data_dir.clone(),
        listen: args.listen,
        fleet_listen: args.fleet_listen,
        worker_listen: args.worker_listen,
        metrics_listen: args.metrics_listen.0,
        worker_metrics_listen: args.worker_metrics_listen.0,
    })
    .await
    .map_err(|e| CliError::Config(e.to_string()))?;
    let data_dir = std::path::absolute(&platform.data_dir)
        .map_err(|e| CliError::file(&platform.data_dir, e))?;
    println!(
        "ember is up in {:.1?}: control on {}, one local worker",
        started.elapsed(),
        platform.endpoint
    );
    if !local::sandboxed() {
        println!(
            "warning: not running as root, so the local worker's micro-VMs run unsandboxed, \
             as threads of this process (--insecure-no-jail); run as root for one sandboxed \
             process per VM (docs/isolation.md)"
        );
    }
    if let Some(addr) = platform.metrics_addr {
        println!("metrics on http://{addr}/metrics");
    }
    if let Some(addr) = args.worker_metrics_listen.0.filter(|a| a.port() != 0) {
        println!("the worker's metrics on http://{addr}/metrics");
    }

    let endpoint = platform.endpoint.clone();
    let dir = data_dir.clone();
    let demo = tokio::task::spawn_blocking(move || demo(&endpoint, &dir))
        .await
        .map_err(|e| CliError::Config(format!("the example's thread failed: {e}")))?;
    if let Err(e) = demo {
        platform.shutdown().await;
        return Err(e);
    }
    println!("{}", usage(&platform.endpoint, &data_dir));
    stop.await;
    println!("stopping: the worker finishes what runs, then control stops");
    platform.shutdown().await;
    Ok(())
}

/// Deploys the example (once per data directory) and invokes it cold and warm.
fn demo(endpoint: &str, data_dir: &Path) -> Result<(), CliError> {
    let client = Client::new(Settings {
        endpoint: config::parse_endpoint(endpoint)?,
        region: config::DEFAULT_REGION.to_owned(),
        ca: Some(data_dir.join("ca.pem")),
        credentials: credentials::load(&data_dir.join("credentials"), PROFILE)?,
    })?;
    if deploy(&client, EXAMPLE, ember_examples::HELLO)? {
        println!("deployed the example function `{EXAMPLE}` (examples/functions/hello)");
    }
    let payload = br#"{"name":"ember"}"#;
    for attempt in ["first", "again"] {
        let start = Instant::now();
        let invoked = invoke(
            &client,
            EXAMPLE,
            None,
            "RequestResponse",
            true,
            payload.to_vec(),
        )?;
        show(attempt, start.elapsed(), &invoked);
    }
    configure_cli(endpoint, data_dir)
}

/// Creates function `name` from `module` unless it exists; true when it was created.
pub(super) fn deploy(client: &Client, name: &str, module: &[u8]) -> Result<bool, CliError> {
    let get = Call::new(
        Method::GET,
        format!("/2015-03-31/functions/{}", segment(name)),
        function::subject(name),
    );
    match client.json(get) {
        Ok(_) => return Ok(false),
        Err(CliError::Api { status: 404, .. }) => {}
        Err(e) => return Err(e),
    }
    let zip = code::zip_module(&format!("{name}.wasm"), module);
    let create = Call::new(
        Method::POST,
        "/2015-03-31/functions".to_owned(),
        function::subject(name),
    )
    .json(&json!({
        "FunctionName": name,
        "Runtime": "wasm32-wasip1",
        "Role": function::default_role(client.account_id())?,
        "Code": { "ZipFile": base64(&zip) },
    }));
    client.json(create)?;
    Ok(true)
}

fn base64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn show(attempt: &str, elapsed: Duration, invoked: &Invoked) {
    let response = String::from_utf8_lossy(&invoked.payload);
    println!("invoked `{EXAMPLE}` ({attempt}) in {elapsed:.2?}: {response}");
    if let Some(error) = &invoked.function_error {
        println!("  function error: {error}");
    }
    for line in invoked.log_tail.iter().flat_map(|log| log.lines()) {
        println!("  | {line}");
    }
}

/// Points the `ember` CLI at this platform, unless it is configured already.
fn configure_cli(endpoint: &str, data_dir: &Path) -> Result<(), CliError> {
    let path = config::path()?;
    if path.exists() {
        return Ok(());
    }
    let file = ConfigFile {
        endpoint: Some(endpoint.to_owned()),
        region: None,
        ca: Some(data_dir.join("ca.pem")),
        credentials: Some(StoredCredentials::File {
            path: data_dir.join("credentials"),
            profile: PROFILE.to_owned(),
        }),
    };
    file.save(&path)?;
    println!("configured the ember CLI for it ({})", path.display());
    Ok(())
}

/// How to use what runs.
fn usage(endpoint: &str, data_dir: &Path) -> String {
    let dir = data_dir.display();
    format!(
        "\nTry it (Ctrl-C stops ember):\n  \
         ember invoke {EXAMPLE} --payload '{{\"name\":\"you\"}}'\n  \
         ember function list\n  \
         AWS_SHARED_CREDENTIALS_FILE={dir}/credentials AWS_CA_BUNDLE={dir}/ca.pem \\\n    \
         aws --profile {PROFILE} --region {region} --endpoint-url {endpoint} lambda list-functions",
        region = config::DEFAULT_REGION,
    )
}
