//! The CloudWatch Logs API subset that reads function logs: `POST /` with
//! `X-Amz-Target: Logs_20140328.{Operation}` and a JSON 1.1 body, signed for the service
//! `logs`. `aws logs filter-log-events`, `get-log-events`, `describe-log-streams` and
//! boto3's `logs` client work against it; `ember logs` uses `FilterLogEvents`.
//!
//! An account sees only its own functions' groups (`/aws/lambda/{function}`); any other
//! group is `ResourceNotFoundException`. `filterPattern` is a plain, case-sensitive
//! substring (surrounding double quotes are removed), not CloudWatch's pattern language.
//! Errors have the JSON 1.1 shape: `{"__type": "…", "message": "…"}`.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Extension, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::logs::GROUP_PREFIX;
use crate::service::{Principal, Service};
use ember_store::logs::{self as store, Event, Position, Query};

/// The `X-Amz-Target` prefix of CloudWatch Logs operations.
pub const TARGET_PREFIX: &str = "Logs_20140328.";

/// The service name these requests are signed for.
pub const SIGNING_NAME: &str = "logs";

const CONTENT_TYPE: &str = "application/x-amz-json-1.1";

/// Events `FilterLogEvents` examines for one page at most, matching or not: with a
/// selective pattern a page may come back short, with a `nextToken` to go on.
const SCAN_BUDGET: usize = 10_000;

/// Events read from SQL at a time while filtering.
const SCAN_CHUNK: i64 = 1000;

/// Whether a request is for this API (and so signed for [`SIGNING_NAME`]).
pub fn is_logs_request(path: &str, headers: &HeaderMap) -> bool {
    path == "/"
        && headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|target| target.starts_with(TARGET_PREFIX))
}

/// The route.
pub fn routes() -> Router<Arc<Service>> {
    Router::new().route("/", post(handle))
}

/// A CloudWatch Logs error.
#[derive(Debug)]
struct LogsError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl LogsError {
    fn invalid(message: impl Into<String>) -> LogsError {
        LogsError {
            status: StatusCode::BAD_REQUEST,
            kind: "InvalidParameterException",
            message: message.into(),
        }
    }

    fn no_group() -> LogsError {
        LogsError {
            status: StatusCode::BAD_REQUEST,
            kind: "ResourceNotFoundException",
            message: "The specified log group does not exist.".into(),
        }
    }
}

impl IntoResponse for LogsError {
    fn into_response(self) -> Response {
        let body = json!({ "__type": self.kind, "message": self.message });
        let mut response = (self.status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
        headers.insert("x-amzn-ErrorType", HeaderValue::from_static(self.kind));
        response
    }
}

impl From<sqlx::Error> for LogsError {
    fn from(e: sqlx::Error) -> LogsError {
        tracing::error!(error = %e, "log store error");
        LogsError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "ServiceUnavailableException",
            message: format!("log store: {e}"),
        }
    }
}

async fn handle(
    State(service): State<Arc<Service>>,
    Extension(principal): Extension<Principal>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    match dispatch(&service, &principal.account_id, &headers, &body).await {
        Ok(value) => {
            let mut response = (StatusCode::OK, value.to_string()).into_response();
            response
                .headers_mut()
                .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
            response
        }
        Err(e) => e.into_response(),
    }
}

async fn dispatch(
    service: &Service,
    account: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Value, LogsError> {
    let target = headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let operation = target.strip_prefix(TARGET_PREFIX).unwrap_or(target);
    let pool = service.registry.pool();
    match operation {
        "FilterLogEvents" => filter_log_events(pool, account, parse(body)?).await,
        "GetLogEvents" => get_log_events(pool, account, parse(body)?).await,
        "DescribeLogStreams" => describe_log_streams(service, account, parse(body)?).await,
        _ => Err(LogsError {
            status: StatusCode::BAD_REQUEST,
            kind: "UnknownOperationException",
            message: format!("Operation {target:?} is not supported."),
        }),
    }
}

fn parse<T: for<'de> Deserialize<'de>>(body: &[u8]) -> Result<T, LogsError> {
    let body = if body.is_empty() { b"{}" } else { body };
    serde_json::from_slice(body).map_err(|e| LogsError {
        status: StatusCode::BAD_REQUEST,
        kind: "SerializationException",
        message: e.to_string(),
    })
}

/// The function a group name (or a log group ARN) names, if it is one of the account's.
async fn group(
    pool: &sqlx::AnyPool,
    account: &str,
    name: Option<&str>,
    identifier: Option<&str>,
) -> Result<String, LogsError> {
    let given = name
        .or(identifier)
        .ok_or_else(|| LogsError::invalid("logGroupName or logGroupIdentifier is required."))?;
    // arn:aws:logs:REGION:ACCOUNT:log-group:NAME[:*]
    let given = match given.split_once(":log-group:") {
        Some((arn, rest)) if arn.starts_with("arn:") => {
            if arn.rsplit(':').next() != Some(account) {
                return Err(LogsError::no_group());
            }
            rest.strip_suffix(":*").unwrap_or(rest)
        }
        _ => given,
    };
    let function = given
        .strip_prefix(GROUP_PREFIX)
        .filter(|f| {
            (1..=64).contains(&f.len())
                && f.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .ok_or_else(LogsError::no_group)?;
    if store::group_exists(pool, account, function).await? {
        Ok(function.to_owned())
    } else {
        Err(LogsError::no_group())
    }
}

fn limit(given: Option<i64>, max: i64) -> Result<i64, LogsError> {
    match given {
        None => Ok(max),
        Some(n) if (1..=max).contains(&n) => Ok(n),
        Some(n) => Err(LogsError::invalid(format!(
            "1 validation error detected: Value '{n}' at 'limit' failed to satisfy \
             constraint: Member must have value between 1 and {max}"
        ))),
    }
}

fn bad_token() -> LogsError {
    LogsError::invalid("The specified nextToken is invalid.")
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct FilterRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_names: Option<Vec<String>>,
    log_stream_name_prefix: Option<String>,
    start_time: Option<i64>,
    end_time: Option<i64>,
    filter_pattern: Option<String>,
    next_token: Option<String>,
    limit: Option<i64>,
}

/// `FilterLogEvents`: the group's events in time order, across streams.
async fn filter_log_events(
    pool: &sqlx::AnyPool,
    account: &str,
    request: FilterRequest,
) -> Result<Value, LogsError> {
    let function = group(
        pool,
        account,
        request.log_group_name.as_deref(),
        request.log_group_identifier.as_deref(),
    )
    .await?;
    if request.log_stream_names.is_some() && request.log_stream_name_prefix.is_some() {
        return Err(LogsError::invalid(
            "logStreamNames and logStreamNamePrefix are mutually exclusive.",
        ));
    }
    let limit = limit(request.limit, 10_000)? as usize;
    let pattern = request
        .filter_pattern
        .as_deref()
        .map(|p| p.trim())
        .map(|p| {
            p.strip_prefix('"')
                .and_then(|p| p.strip_suffix('"'))
                .unwrap_or(p)
        })
        .filter(|p| !p.is_empty());
    let matches = |event: &Event| {
        let stream_ok = match (&request.log_stream_names, &request.log_stream_name_prefix) {
            (Some(names), _) => names.contains(&event.stream),
            (_, Some(prefix)) => event.stream.starts_with(prefix.as_str()),
            _ => true,
        };
        stream_ok && pattern.is_none_or(|p| event.message.contains(p))
    };
    let after = match request.next_token.as_deref() {
        Some(token) => Some(Position::parse(token).ok_or_else(bad_token)?),
        None => None,
    };
    let mut query = Query {
        account,
        function: &function,
        stream: match request.log_stream_names.as_deref() {
            Some([only]) => Some(only.as_str()),
            _ => None,
        },
        start_ms: request.start_time,
        end_ms: request.end_time,
        after,
        backward: false,
        limit: SCAN_CHUNK,
    };
    let mut found = Vec::new();
    let mut scanned = 0;
    let mut more = false;
    loop {
        let chunk = store::read(pool, &query).await?;
        let full = chunk.len() as i64 == SCAN_CHUNK;
        for event in chunk {
            scanned += 1;
            query.after = Some(event.position.clone());
            if matches(&event) {
                found.push(event);
            }
            if found.len() == limit || scanned == SCAN_BUDGET {
                more = true;
                break;
            }
        }
        if more || !full {
            break;
        }
    }
    let events: Vec<Value> = found
        .iter()
        .map(|e| {
            json!({
                "logStreamName": e.stream,
                "timestamp": e.position.timestamp_ms,
                "message": e.message,
                "ingestionTime": e.ingestion_ms,
                "eventId": e.position.event_id(),
            })
        })
        .collect();
    let mut response = json!({ "events": events, "searchedLogStreams": [] });
    if more {
        if let Some(last) = &query.after {
            response["nextToken"] = json!(last.event_id());
        }
    }
    Ok(response)
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct GetRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name: String,
    start_time: Option<i64>,
    end_time: Option<i64>,
    next_token: Option<String>,
    limit: Option<i64>,
    start_from_head: Option<bool>,
}

/// `GetLogEvents`: one stream's events. Tokens are `f/` (forward) or `b/` (backward) and
/// an event id; at either end the token given comes back, which is how clients know to
/// stop.
async fn get_log_events(
    pool: &sqlx::AnyPool,
    account: &str,
    request: GetRequest,
) -> Result<Value, LogsError> {
    let function = group(
        pool,
        account,
        request.log_group_name.as_deref(),
        request.log_group_identifier.as_deref(),
    )
    .await?;
    let limit = limit(request.limit, 10_000)?;
    let (backward, after) = match request.next_token.as_deref() {
        None => (!request.start_from_head.unwrap_or(false), None),
        Some(token) => {
            let (direction, id) = token.split_once('/').ok_or_else(bad_token)?;
            let after = match id {
                "" => None,
                id => Some(Position::parse(id).ok_or_else(bad_token)?),
            };
            match direction {
                "f" => (false, after),
                "b" => (true, after),
                _ => return Err(bad_token()),
            }
        }
    };
    let events = store::read(
        pool,
        &Query {
            account,
            function: &function,
            stream: Some(&request.log_stream_name),
            start_ms: request.start_time,
            end_ms: request.end_time,
            after,
            backward,
            limit,
        },
    )
    .await?;
    let token = |direction: &str, event: Option<&Event>| match event {
        Some(e) => format!("{direction}/{}", e.position.event_id()),
        None => request
            .next_token
            .clone()
            .unwrap_or_else(|| format!("{direction}/")),
    };
    let (forward_token, backward_token) = (token("f", events.last()), token("b", events.first()));
    let events: Vec<Value> = events
        .iter()
        .map(|e| {
            json!({
                "timestamp": e.position.timestamp_ms,
                "message": e.message,
                "ingestionTime": e.ingestion_ms,
            })
        })
        .collect();
    Ok(json!({
        "events": events,
        "nextForwardToken": forward_token,
        "nextBackwardToken": backward_token,
    }))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct StreamsRequest {
    log_group_name: Option<String>,
    log_group_identifier: Option<String>,
    log_stream_name_prefix: Option<String>,
    order_by: Option<String>,
    descending: Option<bool>,
    next_token: Option<String>,
    limit: Option<i64>,
}

/// `DescribeLogStreams`: the group's streams by name or by last event time.
async fn describe_log_streams(
    service: &Service,
    account: &str,
    request: StreamsRequest,
) -> Result<Value, LogsError> {
    let pool = service.registry.pool();
    let function = group(
        pool,
        account,
        request.log_group_name.as_deref(),
        request.log_group_identifier.as_deref(),
    )
    .await?;
    let limit = limit(request.limit, 50)? as usize;
    let mut streams = store::streams(pool, account, &function).await?;
    match request.order_by.as_deref() {
        None | Some("LogStreamName") => {}
        Some("LastEventTime") => {
            if request.log_stream_name_prefix.is_some() {
                return Err(LogsError::invalid(
                    "Cannot order by LastEventTime with a logStreamNamePrefix.",
                ));
            }
            streams.sort_by_key(|s| s.last_ms);
        }
        Some(other) => {
            return Err(LogsError::invalid(format!(
                "1 validation error detected: Value '{other}' at 'orderBy' failed to \
                 satisfy constraint: Member must satisfy enum value set: [LogStreamName, \
                 LastEventTime]"
            )))
        }
    }
    if request.descending.unwrap_or(false) {
        streams.reverse();
    }
    if let Some(prefix) = &request.log_stream_name_prefix {
        streams.retain(|s| s.name.starts_with(prefix.as_str()));
    }
    let skip: usize = match request.next_token.as_deref() {
        Some(token) => token.parse().map_err(|_| bad_token())?,
        None => 0,
    };
    let arn = format!(
        "arn:aws:logs:{}:{account}:log-group:{GROUP_PREFIX}{function}",
        service.settings.region
    );
    let page: Vec<Value> = streams
        .iter()
        .skip(skip)
        .take(limit)
        .map(|s| {
            json!({
                "logStreamName": s.name,
                "creationTime": s.first_ms,
                "firstEventTimestamp": s.first_ms,
                "lastEventTimestamp": s.last_ms,
                "lastIngestionTime": s.last_ingestion_ms,
                "arn": format!("{arn}:log-stream:{}", s.name),
                "storedBytes": 0,
            })
        })
        .collect();
    let mut response = json!({ "logStreams": page });
    if skip + limit < streams.len() {
        response["nextToken"] = json!((skip + limit).to_string());
    }
    Ok(response)
}
