//! `ember invoke`: Lambda's Invoke (`POST /2015-03-31/functions/{name}/invocations`). The
//! response payload goes to stdout as it is, so it pipes into other tools; the executed
//! version, a function error and the log tail go to stderr. With `--output json` one JSON
//! object carries all of them, like the AWS CLI's output plus the payload.

use std::path::PathBuf;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use clap::Args;
use reqwest::Method;
use serde_json::json;

use super::client::{segment, Call, Client, Reply};
use super::error::CliError;
use super::function::subject;
use super::output::Format;

#[derive(Debug, Args)]
pub struct InvokeArgs {
    /// The function's name or ARN
    function: String,
    /// A version or alias (default `$LATEST`)
    #[arg(long)]
    qualifier: Option<String>,
    /// The event, as text (usually JSON)
    #[arg(long, conflicts_with = "payload_file")]
    payload: Option<String>,
    /// Read the event from a file (`-` for standard input)
    #[arg(long, value_name = "FILE")]
    payload_file: Option<PathBuf>,
    /// Queue the invocation and return at once (Lambda's `Event` invocation type)
    #[arg(long, conflicts_with = "dry_run")]
    event: bool,
    /// Only check that the function exists and may be invoked (`DryRun`)
    #[arg(long)]
    dry_run: bool,
    /// Also print the last 4 KiB of the function's log (`LogType: Tail`)
    #[arg(long)]
    log_tail: bool,
}

/// What one invocation returned.
#[derive(Debug)]
pub struct Invoked {
    pub status: u16,
    pub executed_version: Option<String>,
    pub function_error: Option<String>,
    pub log_tail: Option<String>,
    pub payload: Vec<u8>,
}

/// Sends one invocation; shared with `ember bench`.
pub fn invoke(
    client: &Client,
    function: &str,
    qualifier: Option<&str>,
    invocation_type: &str,
    log_tail: bool,
    payload: Vec<u8>,
) -> Result<Invoked, CliError> {
    let mut call = Call::new(
        Method::POST,
        format!("/2015-03-31/functions/{}/invocations", segment(function)),
        subject(function),
    )
    .query_opt("Qualifier", qualifier)
    .header("x-amz-invocation-type", invocation_type)
    .bytes(payload);
    if log_tail {
        call = call.header("x-amz-log-type", "Tail");
    }
    let Reply {
        status,
        headers,
        body,
    } = client.send(call)?;
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let log_tail = header("x-amz-log-result")
        .and_then(|b64| STANDARD.decode(b64).ok())
        .map(|bytes| String::from_utf8_lossy(&bytes).into_owned());
    Ok(Invoked {
        status,
        executed_version: header("x-amz-executed-version"),
        function_error: header("x-amz-function-error"),
        log_tail,
        payload: body,
    })
}

pub fn run(args: InvokeArgs, client: &Client, format: Format) -> Result<(), CliError> {
    let payload = match (&args.payload, &args.payload_file) {
        (Some(text), _) => text.clone().into_bytes(),
        (None, Some(path)) if path.as_os_str() == "-" => {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin(), &mut bytes)
                .map_err(|e| CliError::file(path, e))?;
            bytes
        }
        (None, Some(path)) => std::fs::read(path).map_err(|e| CliError::file(path, e))?,
        (None, None) => b"{}".to_vec(),
    };
    let invocation_type = match (args.event, args.dry_run) {
        (true, _) => "Event",
        (_, true) => "DryRun",
        _ => "RequestResponse",
    };
    let invoked = invoke(
        client,
        &args.function,
        args.qualifier.as_deref(),
        invocation_type,
        args.log_tail,
        payload,
    )?;
    if format == Format::Json {
        let value = json!({
            "StatusCode": invoked.status,
            "ExecutedVersion": invoked.executed_version,
            "FunctionError": invoked.function_error,
            "LogResult": invoked.log_tail,
            "Payload": String::from_utf8_lossy(&invoked.payload),
        });
        return format.print(&value, |_| String::new());
    }
    show(&invoked, invocation_type)
}

/// The payload on stdout, everything else on stderr.
fn show(invoked: &Invoked, invocation_type: &str) -> Result<(), CliError> {
    use std::io::Write;
    if let Some(log) = &invoked.log_tail {
        for line in log.lines() {
            eprintln!("| {line}");
        }
    }
    match (invocation_type, &invoked.function_error) {
        ("Event", _) => eprintln!("queued (status {})", invoked.status),
        ("DryRun", _) => eprintln!("the function may be invoked (status {})", invoked.status),
        (_, Some(error)) => eprintln!(
            "function error ({error}) in version {}",
            invoked.executed_version.as_deref().unwrap_or("?")
        ),
        _ => {}
    }
    let mut out = std::io::stdout().lock();
    let written = out
        .write_all(&invoked.payload)
        .and_then(|()| match invoked.payload.last() {
            Some(b'\n') | None => Ok(()),
            Some(_) => out.write_all(b"\n"),
        });
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(CliError::file(std::path::Path::new("standard output"), e))
        }
        _ if invoked.function_error.is_some() => Err(CliError::Config(
            "the function returned an error".to_owned(),
        )),
        _ => Ok(()),
    }
}
