//! Function log events in SQL (`log_events`, migration 0004), portable between SQLite and
//! PostgreSQL like the registry. Events sort by time, then by who wrote them and in what
//! order ([`Position`]), so the lines of one invocation keep their order and paging resumes
//! exactly where it stopped, whichever control instance wrote them.

use sqlx::{AnyPool, QueryBuilder, Row};

/// One log event (one line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    pub account: String,
    pub function: String,
    pub stream: String,
    pub position: Position,
    /// When the service stored it (Unix ms).
    pub ingestion_ms: i64,
    pub message: String,
}

/// Where an event sorts: its time (Unix ms), the writing instance's id, and its number in
/// that instance's sequence.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    pub timestamp_ms: i64,
    pub writer: String,
    pub seq: i64,
}

impl Position {
    /// The event's id, as CloudWatch's `eventId`: unique and opaque.
    pub fn event_id(&self) -> String {
        format!("{}-{}-{}", self.timestamp_ms, self.writer, self.seq)
    }

    /// Reads back an [`Position::event_id`] (paging tokens are event ids).
    pub fn parse(id: &str) -> Option<Position> {
        let mut parts = id.splitn(3, '-');
        let timestamp_ms = parts.next()?.parse().ok()?;
        let writer = parts.next()?;
        let seq = parts.next()?.parse().ok()?;
        let hex = !writer.is_empty()
            && writer.len() <= 32
            && writer.bytes().all(|b| b.is_ascii_hexdigit());
        hex.then(|| Position {
            timestamp_ms,
            writer: writer.to_owned(),
            seq,
        })
    }
}

/// Which events a read wants.
#[derive(Clone, Debug, Default)]
pub struct Query<'a> {
    pub account: &'a str,
    pub function: &'a str,
    /// Only this stream.
    pub stream: Option<&'a str>,
    /// Times in [start, end), Unix ms.
    pub start_ms: Option<i64>,
    pub end_ms: Option<i64>,
    /// Strictly after (forward) or before (backward) this position.
    pub after: Option<Position>,
    /// Newest first instead of oldest first.
    pub backward: bool,
    pub limit: i64,
}

/// Stores `events` in one transaction.
pub async fn insert(pool: &AnyPool, events: &[Event]) -> Result<(), sqlx::Error> {
    // 8 values a row keeps a chunk well under SQLite's and PostgreSQL's parameter limits.
    const ROWS: usize = 100;
    let mut tx = pool.begin().await?;
    for chunk in events.chunks(ROWS) {
        let mut insert = QueryBuilder::new(
            "INSERT INTO log_events (account_id, function_name, log_stream, timestamp_ms, \
             writer, seq, ingestion_ms, message) ",
        );
        insert.push_values(chunk, |mut row, e| {
            row.push_bind(e.account.clone())
                .push_bind(e.function.clone())
                .push_bind(e.stream.clone())
                .push_bind(e.position.timestamp_ms)
                .push_bind(e.position.writer.clone())
                .push_bind(e.position.seq)
                .push_bind(e.ingestion_ms)
                .push_bind(e.message.clone());
        });
        insert.build().execute(&mut *tx).await?;
    }
    tx.commit().await
}

/// Up to `query.limit` events, oldest first (also when read backward).
pub async fn read(pool: &AnyPool, query: &Query<'_>) -> Result<Vec<Event>, sqlx::Error> {
    let mut select = QueryBuilder::new(
        "SELECT log_stream, timestamp_ms, writer, seq, ingestion_ms, message FROM log_events \
         WHERE account_id = ",
    );
    select
        .push_bind(query.account.to_owned())
        .push(" AND function_name = ")
        .push_bind(query.function.to_owned());
    if let Some(stream) = query.stream {
        select
            .push(" AND log_stream = ")
            .push_bind(stream.to_owned());
    }
    if let Some(start) = query.start_ms {
        select.push(" AND timestamp_ms >= ").push_bind(start);
    }
    if let Some(end) = query.end_ms {
        select.push(" AND timestamp_ms < ").push_bind(end);
    }
    let (beyond, order) = if query.backward {
        ("<", "DESC")
    } else {
        (">", "ASC")
    };
    if let Some(after) = &query.after {
        // (timestamp_ms, writer, seq) beyond `after`, spelled out for both backends.
        select
            .push(format!(" AND (timestamp_ms {beyond} "))
            .push_bind(after.timestamp_ms)
            .push(" OR (timestamp_ms = ")
            .push_bind(after.timestamp_ms)
            .push(format!(" AND (writer {beyond} "))
            .push_bind(after.writer.clone())
            .push(" OR (writer = ")
            .push_bind(after.writer.clone())
            .push(format!(" AND seq {beyond} "))
            .push_bind(after.seq)
            .push("))))");
    }
    select
        .push(format!(
            " ORDER BY timestamp_ms {order}, writer {order}, seq {order} LIMIT "
        ))
        .push_bind(query.limit);
    let rows = select.build().fetch_all(pool).await?;
    let mut events = rows
        .into_iter()
        .map(|row| {
            Ok(Event {
                account: query.account.to_owned(),
                function: query.function.to_owned(),
                stream: row.try_get(0)?,
                position: Position {
                    timestamp_ms: row.try_get(1)?,
                    writer: row.try_get(2)?,
                    seq: row.try_get(3)?,
                },
                ingestion_ms: row.try_get(4)?,
                message: row.try_get(5)?,
            })
        })
        .collect::<Result<Vec<_>, sqlx::Error>>()?;
    if query.backward {
        events.reverse();
    }
    Ok(events)
}

/// One log stream and the times of its first and last events.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stream {
    pub name: String,
    pub first_ms: i64,
    pub last_ms: i64,
    pub last_ingestion_ms: i64,
}

/// The function's log streams, by name.
pub async fn streams(
    pool: &AnyPool,
    account: &str,
    function: &str,
) -> Result<Vec<Stream>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT log_stream, MIN(timestamp_ms), MAX(timestamp_ms), MAX(ingestion_ms) \
         FROM log_events WHERE account_id = $1 AND function_name = $2 \
         GROUP BY log_stream ORDER BY log_stream",
    )
    .bind(account)
    .bind(function)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Stream {
                name: row.try_get(0)?,
                first_ms: row.try_get(1)?,
                last_ms: row.try_get(2)?,
                last_ingestion_ms: row.try_get(3)?,
            })
        })
        .collect()
}

/// Whether the account has a log group for `function`: the function exists, or has logs
/// left from before it was deleted.
pub async fn group_exists(
    pool: &AnyPool,
    account: &str,
    function: &str,
) -> Result<bool, sqlx::Error> {
    let found = sqlx::query(
        "SELECT 1 FROM functions WHERE account_id = $1 AND name = $2 \
         UNION ALL SELECT 1 FROM log_events WHERE account_id = $1 AND function_name = $2 \
         LIMIT 1",
    )
    .bind(account)
    .bind(function)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

/// Deletes events older than `before_ms`; returns how many.
pub async fn prune_older(pool: &AnyPool, before_ms: i64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM log_events WHERE timestamp_ms < $1")
        .bind(before_ms)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

/// Keeps about the newest `keep` events of one function (events sharing the oldest kept
/// millisecond stay too); returns how many were deleted.
pub async fn prune_beyond(
    pool: &AnyPool,
    account: &str,
    function: &str,
    keep: i64,
) -> Result<u64, sqlx::Error> {
    let oldest_kept: Option<i64> = sqlx::query_scalar(
        "SELECT timestamp_ms FROM log_events WHERE account_id = $1 AND function_name = $2 \
         ORDER BY timestamp_ms DESC LIMIT 1 OFFSET $3",
    )
    .bind(account)
    .bind(function)
    .bind(keep.saturating_sub(1).max(0))
    .fetch_optional(pool)
    .await?;
    let Some(oldest_kept) = oldest_kept else {
        return Ok(0);
    };
    let done = sqlx::query(
        "DELETE FROM log_events WHERE account_id = $1 AND function_name = $2 \
         AND timestamp_ms < $3",
    )
    .bind(account)
    .bind(function)
    .bind(oldest_kept)
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    fn event(stream: &str, timestamp_ms: i64, seq: i64, message: &str) -> Event {
        Event {
            account: "111111111111".into(),
            function: "f".into(),
            stream: stream.into(),
            position: Position {
                timestamp_ms,
                writer: "ab".into(),
                seq,
            },
            ingestion_ms: timestamp_ms + 1,
            message: message.into(),
        }
    }

    #[tokio::test]
    async fn reads_pages_in_order_and_prunes() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_sqlite(dir.path()).await.unwrap();
        let pool = registry.pool();
        let events: Vec<Event> = (0..250)
            .map(|i| event(if i % 2 == 0 { "s1" } else { "s2" }, 1000 + i / 10, i, "m"))
            .collect();
        insert(pool, &events).await.unwrap();

        let mut query = Query {
            account: "111111111111",
            function: "f",
            limit: 100,
            ..Query::default()
        };
        let mut read_back = Vec::new();
        loop {
            let page = read(pool, &query).await.unwrap();
            let Some(last) = page.last() else { break };
            query.after = Some(last.position.clone());
            read_back.extend(page);
        }
        assert_eq!(read_back, events);

        let newest = read(
            pool,
            &Query {
                backward: true,
                stream: Some("s2"),
                after: None,
                limit: 3,
                ..query.clone()
            },
        )
        .await;
        let seqs: Vec<i64> = newest.unwrap().iter().map(|e| e.position.seq).collect();
        assert_eq!(seqs, [245, 247, 249]);
        let window = read(
            pool,
            &Query {
                start_ms: Some(1010),
                end_ms: Some(1012),
                after: None,
                ..query.clone()
            },
        )
        .await
        .unwrap();
        assert_eq!(window.len(), 20);

        let id = events[7].position.event_id();
        assert_eq!(Position::parse(&id), Some(events[7].position.clone()));
        assert_eq!(Position::parse("1-zz-3"), None);
        assert_eq!(streams(pool, "111111111111", "f").await.unwrap().len(), 2);
        assert!(group_exists(pool, "111111111111", "f").await.unwrap());
        assert!(!group_exists(pool, "222222222222", "f").await.unwrap());

        assert_eq!(prune_older(pool, 1010).await.unwrap(), 100);
        // 150 left, 10 a millisecond: keeping 25 keeps the newest 3 milliseconds.
        assert_eq!(
            prune_beyond(pool, "111111111111", "f", 25).await.unwrap(),
            120
        );
    }
}
