//! `ember logs`: a function's log events through CloudWatch Logs' `FilterLogEvents` on the
//! group `/aws/lambda/{function}`, every page, in time order. `--follow` asks again every
//! second and prints only events not printed yet (by event id), until interrupted.
//!
//! Each ask of `--follow` looks back [`LOOKBACK`] before the newest event seen, because an
//! invocation's `START` and lines are stamped with its start but stored at its end.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, NaiveDate, NaiveDateTime, Utc};
use clap::Args;
use serde_json::{json, Value};

use super::client::{Call, Client};
use super::error::CliError;
use super::output::Format;
use ember_control::api::logs::{SIGNING_NAME, TARGET_PREFIX};
use ember_control::logs::GROUP_PREFIX;

/// How often `--follow` asks.
const POLL: Duration = Duration::from_secs(1);

/// How far before the newest event seen `--follow` asks again.
const LOOKBACK: i64 = 60_000;

#[derive(Debug, Args)]
pub struct LogsArgs {
    /// The function's name
    function: String,
    /// Start this long ago (`30s`, `10m`, `2h`, `7d`) or at a time (`2026-01-02T15:04:05Z`,
    /// `2026-01-02`; UTC unless it says otherwise)
    #[arg(long, default_value = "10m", value_parser = parse_since)]
    since: Since,
    /// Keep printing new events as they arrive, until Ctrl-C
    #[arg(long, short)]
    follow: bool,
    /// Only events whose message contains this text (case-sensitive)
    #[arg(long)]
    filter: Option<String>,
}

/// Where reading starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Since {
    Ago(Duration),
    /// Unix milliseconds.
    At(i64),
}

impl Since {
    fn start_ms(self, now_ms: i64) -> i64 {
        match self {
            Since::Ago(d) => {
                now_ms.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }
            Since::At(ms) => ms,
        }
    }
}

/// `10m`, `1h`, … or an ISO 8601 time or date.
pub fn parse_since(text: &str) -> Result<Since, String> {
    let text = text.trim();
    if let Some(unit) = text.chars().last().filter(char::is_ascii_alphabetic) {
        let number = &text[..text.len() - 1];
        if let Ok(n) = number.parse::<u64>() {
            let seconds = match unit {
                's' => 1,
                'm' => 60,
                'h' => 3600,
                'd' => 86_400,
                'w' => 7 * 86_400,
                _ => return Err(format!("unknown unit in {text:?}: use s, m, h, d or w")),
            };
            return n
                .checked_mul(seconds)
                .map(|s| Since::Ago(Duration::from_secs(s)))
                .ok_or_else(|| format!("{text:?} is too long ago"));
        }
    }
    let at = DateTime::parse_from_rfc3339(text)
        .map(|t| t.with_timezone(&Utc))
        .or_else(|_| NaiveDateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f").map(|t| t.and_utc()))
        .or_else(|_| {
            NaiveDate::parse_from_str(text, "%Y-%m-%d")
                .map(|d| d.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc())
        })
        .map_err(|_| {
            format!("expected a duration such as 10m or 2h, or a time such as 2026-01-02T15:04:05Z; got {text:?}")
        })?;
    Ok(Since::At(at.timestamp_millis()))
}

pub fn run(args: LogsArgs, client: &Client, format: Format) -> Result<(), CliError> {
    let start = args.since.start_ms(Utc::now().timestamp_millis());
    // Printed event ids and their times, forgotten once out of the window asked for.
    let mut seen: HashMap<String, i64> = HashMap::new();
    let mut newest = start;
    loop {
        let from = if args.follow && !seen.is_empty() {
            start.max(newest - LOOKBACK)
        } else {
            start
        };
        for event in fetch(client, &args, from)? {
            let id = event["eventId"].as_str().unwrap_or_default().to_owned();
            let timestamp = event["timestamp"].as_i64().unwrap_or_default();
            if seen.insert(id, timestamp).is_none() {
                print(&event, format)?;
                newest = newest.max(timestamp);
            }
        }
        if !args.follow {
            return Ok(());
        }
        seen.retain(|_, t| *t >= newest - LOOKBACK);
        std::thread::sleep(POLL);
    }
}

/// Every event from `from_ms` on, all pages.
fn fetch(client: &Client, args: &LogsArgs, from_ms: i64) -> Result<Vec<Value>, CliError> {
    let mut events = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut body = json!({
            "logGroupName": format!("{GROUP_PREFIX}{}", args.function),
            "startTime": from_ms,
        });
        if let Some(filter) = &args.filter {
            body["filterPattern"] = json!(filter);
        }
        if let Some(token) = &token {
            body["nextToken"] = json!(token);
        }
        let call = Call::json_rpc(
            SIGNING_NAME,
            format!("{TARGET_PREFIX}FilterLogEvents"),
            &body,
            format!("the log group of function '{}'", args.function),
        );
        let page = client.json(call)?;
        match page.get("events") {
            Some(Value::Array(page_events)) => events.extend(page_events.iter().cloned()),
            _ => return Err(CliError::Protocol("`events` is not a list".into())),
        }
        match page.get("nextToken").and_then(Value::as_str) {
            Some(next) if token.as_deref() != Some(next) => token = Some(next.to_owned()),
            _ => return Ok(events),
        }
    }
}

/// One event: `TIME STREAM MESSAGE`, or its JSON on one line.
fn print(event: &Value, format: Format) -> Result<(), CliError> {
    let line = match format {
        Format::Json => event.to_string(),
        Format::Table => {
            let time = event["timestamp"]
                .as_i64()
                .and_then(DateTime::<Utc>::from_timestamp_millis)
                .map(|t| t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string())
                .unwrap_or_default();
            format!(
                "{time} {} {}",
                event["logStreamName"].as_str().unwrap_or_default(),
                event["message"].as_str().unwrap_or_default()
            )
        }
    };
    match writeln!(std::io::stdout().lock(), "{line}") {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        written => written.map_err(|e| CliError::file(Path::new("standard output"), e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_durations_and_times() {
        assert_eq!(parse_since("10m"), Ok(Since::Ago(Duration::from_secs(600))));
        assert_eq!(parse_since("1h"), Ok(Since::Ago(Duration::from_secs(3600))));
        assert_eq!(parse_since("30s"), Ok(Since::Ago(Duration::from_secs(30))));
        assert_eq!(
            parse_since("2d"),
            Ok(Since::Ago(Duration::from_secs(2 * 86_400)))
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:01Z"),
            Ok(Since::At(1_767_225_601_000))
        );
        assert_eq!(
            parse_since("2026-01-01T01:00:01+01:00"),
            Ok(Since::At(1_767_225_601_000))
        );
        assert_eq!(
            parse_since("2026-01-01T00:00:01.5"),
            Ok(Since::At(1_767_225_601_500))
        );
        assert_eq!(parse_since("2026-01-01"), Ok(Since::At(1_767_225_600_000)));
        for bad in [
            "",
            "10",
            "10y",
            "m",
            "yesterday",
            "2026-13-01",
            "99999999999999999999w",
        ] {
            assert!(parse_since(bad).is_err(), "{bad}");
        }
        assert_eq!(Since::Ago(Duration::from_secs(1)).start_ms(5000), 4000);
        assert_eq!(Since::At(7).start_ms(5000), 7);
    }
}
