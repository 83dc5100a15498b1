//! Function logs, kept the way Lambda keeps them in CloudWatch Logs: after every invocation
//! the router hands the worker's log to [`Logs::record`], which formats `START`, the
//! function's lines, `END` and `REPORT` ([`format`]) and queues them for the [`writer`]
//! task, which stores them in SQL ([`store`]) without holding up the response. [`api`]
//! serves them through the CloudWatch Logs API subset the AWS CLI and SDKs use; `ember
//! logs` reads them the same way. See `docs/logs.md`.

pub mod format;
pub mod writer;

use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::AnyPool;
use tokio::sync::mpsc;

use self::format::Ran;
use ember_store::logs::{Event, Position};

/// Log groups are named like Lambda's: this prefix and the function's name.
pub const GROUP_PREFIX: &str = "/aws/lambda/";

/// Invocations whose logs may wait for the writer; beyond that new ones are dropped
/// rather than slowing invocations down.
const QUEUE: usize = 4096;

/// How long logs are kept and how many.
#[derive(Clone, Debug)]
pub struct LogSettings {
    /// Events older than this are deleted.
    pub retention: Duration,
    /// Beyond this many events of one function, the oldest are deleted.
    pub max_events_per_function: u64,
    /// How often both limits are enforced.
    pub prune_interval: Duration,
}

impl Default for LogSettings {
    fn default() -> LogSettings {
        LogSettings {
            retention: Duration::from_secs(7 * 24 * 3600),
            max_events_per_function: 100_000,
            prune_interval: writer::PRUNE_INTERVAL,
        }
    }
}

/// The entry to the log store: formats invocations' logs and queues them for the writer.
#[derive(Debug)]
pub struct Logs {
    queue: mpsc::Sender<Vec<Event>>,
    /// This instance's id in event positions.
    writer: String,
    next_seq: AtomicI64,
}

impl Logs {
    /// Starts the writer task on `pool` (in the current Tokio runtime).
    pub fn start(pool: AnyPool, settings: LogSettings) -> Logs {
        let (queue, events) = mpsc::channel(QUEUE);
        tokio::spawn(writer::run(pool, events, settings));
        Logs {
            queue,
            writer: uuid::Uuid::new_v4().simple().to_string(),
            next_seq: AtomicI64::new(0),
        }
    }

    /// Queues the log of an invocation that ran on a worker, and returns it as text
    /// (`START` … `REPORT`), whose end `LogType: Tail` shows.
    pub fn record(&self, account: &str, function: &str, ran: &Ran<'_>) -> String {
        let lines = format::lines(ran);
        let text = format::text(&lines);
        let end_ms = writer::now_ms();
        // The function's lines are stamped with its start; END and REPORT with its end.
        let duration_ms = i64::try_from(ran.response.duration_us / 1000).unwrap_or(0);
        let start_ms = end_ms.saturating_sub(duration_ms);
        let at = DateTime::<Utc>::from_timestamp_millis(end_ms).unwrap_or_default();
        let stream = format::stream_name(at, ran.version, ran.worker_id, ran.response.environment);
        let count = lines.len();
        let first_seq = self.next_seq.fetch_add(count as i64, Ordering::Relaxed);
        let events = lines
            .into_iter()
            .enumerate()
            .map(|(i, message)| Event {
                account: account.to_owned(),
                function: function.to_owned(),
                stream: stream.clone(),
                position: Position {
                    timestamp_ms: if i + 2 >= count { end_ms } else { start_ms },
                    writer: self.writer.clone(),
                    seq: first_seq + i as i64,
                },
                ingestion_ms: 0,
                message,
            })
            .collect();
        if let Err(e) = self.queue.try_send(events) {
            tracing::warn!(%function, error = %e, "function logs dropped: the log writer is behind");
        }
        text
    }
}
