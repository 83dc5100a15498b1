//! Events in SQL (`migrations/0003_events.sql`). An event is `pending` until an executor
//! claims it (`running`, with a claim that ends at `run_at_ms`), then `pending` again for
//! a retry or finished. Every change of state is one conditional `UPDATE`, so two control
//! instances on one PostgreSQL database never both claim or finish the same event.

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use sqlx::AnyPool;

use ember_core::sealed::{self, Sealer};

use crate::sealing::{event_context, sql_error};
use crate::Registry;

/// Where an event is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventState {
    Pending,
    Running,
    /// The function returned a response.
    Succeeded,
    /// The function failed on every attempt.
    Failed,
    /// It was older than the maximum event age before it could run.
    Expired,
    /// Its function (version, alias) no longer exists.
    Dropped,
}

impl EventState {
    pub fn as_str(self) -> &'static str {
        match self {
            EventState::Pending => "pending",
            EventState::Running => "running",
            EventState::Succeeded => "succeeded",
            EventState::Failed => "failed",
            EventState::Expired => "expired",
            EventState::Dropped => "dropped",
        }
    }
}

/// An event as the executor runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Event {
    /// The request id its caller got; the invocation's request id on every attempt.
    pub id: String,
    pub account: String,
    pub function: String,
    /// As the caller gave it: an alias is resolved at each attempt.
    pub qualifier: Option<String>,
    pub payload: Vec<u8>,
    /// Attempts that count against the retries.
    pub attempts: u32,
    /// Times it waited for a throttle or a worker.
    pub deferrals: u32,
    pub enqueued_at_ms: u64,
}

type Row = (
    String,
    String,
    String,
    Option<String>,
    String,
    i64,
    i64,
    i64,
);

const COLUMNS: &str =
    "id, account_id, function_name, qualifier, payload, attempts, deferrals, enqueued_at_ms";

/// Stores a new pending event, due at once. Committed when this returns (each statement
/// outside a transaction commits on its own).
pub async fn insert(registry: &Registry, event: &Event) -> Result<(), sqlx::Error> {
    let payload = registry
        .sealer()?
        .seal(&event_context(&event.id), &event.payload)
        .map_err(sql_error)?;
    sqlx::query(&format!(
        "INSERT INTO events ({COLUMNS}, state, run_at_ms) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $8)"
    ))
    .bind(&event.id)
    .bind(&event.account)
    .bind(&event.function)
    .bind(event.qualifier.as_deref())
    .bind(payload)
    .bind(i64::from(event.attempts))
    .bind(i64::from(event.deferrals))
    .bind(clamp(event.enqueued_at_ms))
    .bind(EventState::Pending.as_str())
    .execute(registry.pool())
    .await?;
    Ok(())
}

/// The ids of up to `limit` pending events due at `now_ms`, taking turns by account so that
/// one account's backlog cannot hold another's events back. Turns go to the account with
/// the fewest events running plus taken in this call (ties: the one waiting longest), and
/// within an account the longest waiting event goes first. An account with 100,000 queued
/// events and some running thus gets its next one after another account's first.
pub async fn due(pool: &AnyPool, now_ms: u64, limit: usize) -> Result<Vec<String>, sqlx::Error> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let running: Vec<(String, i64)> = sqlx::query_as(
        "SELECT account_id, COUNT(*) FROM events WHERE state = $1 GROUP BY account_id",
    )
    .bind(EventState::Running.as_str())
    .fetch_all(pool)
    .await?;
    let running: HashMap<String, i64> = running.into_iter().collect();
    let waiting: Vec<(String, i64, i64)> = sqlx::query_as(
        "SELECT account_id, MIN(run_at_ms), COUNT(*) FROM events \
         WHERE state = $1 AND run_at_ms <= $2 GROUP BY account_id",
    )
    .bind(EventState::Pending.as_str())
    .bind(clamp(now_ms))
    .fetch_all(pool)
    .await?;
    // (account, its turn's rank, longest wait, due events left, taken).
    let mut accounts: Vec<(String, i64, i64, i64, i64)> = waiting
        .into_iter()
        .map(|(account, oldest, count)| {
            let rank = running.get(&account).copied().unwrap_or(0);
            (account, rank, oldest, count, 0)
        })
        .collect();
    let mut order = Vec::new();
    while order.len() < limit {
        let Some(next) = accounts
            .iter_mut()
            .filter(|a| a.3 > 0)
            .min_by(|a, b| (a.1, a.2, &a.0).cmp(&(b.1, b.2, &b.0)))
        else {
            break;
        };
        next.1 += 1;
        next.3 -= 1;
        next.4 += 1;
        order.push(next.0.clone());
    }
    let mut ids: HashMap<String, std::vec::IntoIter<String>> = HashMap::new();
    for (account, _, _, _, taken) in accounts.iter().filter(|a| a.4 > 0) {
        let rows: Vec<(String,)> = sqlx::query_as(
            "SELECT id FROM events WHERE state = $1 AND account_id = $2 AND run_at_ms <= $3 \
             ORDER BY run_at_ms, id LIMIT $4",
        )
        .bind(EventState::Pending.as_str())
        .bind(account)
        .bind(clamp(now_ms))
        .bind(*taken)
        .fetch_all(pool)
        .await?;
        let rows: Vec<String> = rows.into_iter().map(|(id,)| id).collect();
        ids.insert(account.clone(), rows.into_iter());
    }
    Ok(order
        .iter()
        .filter_map(|account| ids.get_mut(account).and_then(Iterator::next))
        .collect())
}

/// When the next pending event is due, if any is pending.
pub async fn next_due(pool: &AnyPool) -> Result<Option<u64>, sqlx::Error> {
    let (at,): (Option<i64>,) =
        sqlx::query_as("SELECT MIN(run_at_ms) FROM events WHERE state = $1")
            .bind(EventState::Pending.as_str())
            .fetch_one(pool)
            .await?;
    Ok(at.map(unclamp))
}

/// Claims event `id` for one attempt until `until_ms`: `None` when it is not (or no longer)
/// pending and due, e.g. another instance claimed it first.
pub async fn claim(
    registry: &Registry,
    id: &str,
    now_ms: u64,
    until_ms: u64,
) -> Result<Option<Event>, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE events SET state = $1, run_at_ms = $2 \
         WHERE id = $3 AND state = $4 AND run_at_ms <= $5",
    )
    .bind(EventState::Running.as_str())
    .bind(clamp(until_ms))
    .bind(id)
    .bind(EventState::Pending.as_str())
    .bind(clamp(now_ms))
    .execute(registry.pool())
    .await?;
    if done.rows_affected() != 1 {
        return Ok(None);
    }
    let row: Row = sqlx::query_as(&format!("SELECT {COLUMNS} FROM events WHERE id = $1"))
        .bind(id)
        .fetch_one(registry.pool())
        .await?;
    event(registry.sealer()?, row).map(Some)
}

/// Puts a running event back, due at `at_ms`, with its counters and why it did not
/// succeed.
pub async fn retry_at(
    pool: &AnyPool,
    event: &Event,
    at_ms: u64,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE events SET state = $1, run_at_ms = $2, attempts = $3, deferrals = $4, \
         last_error = $5 WHERE id = $6 AND state = $7",
    )
    .bind(EventState::Pending.as_str())
    .bind(clamp(at_ms))
    .bind(i64::from(event.attempts))
    .bind(i64::from(event.deferrals))
    .bind(error)
    .bind(&event.id)
    .bind(EventState::Running.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a running event's end.
pub async fn finish(
    pool: &AnyPool,
    event: &Event,
    state: EventState,
    error: Option<&str>,
    now_ms: u64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE events SET state = $1, finished_at_ms = $2, attempts = $3, deferrals = $4, \
         last_error = $5 WHERE id = $6 AND state = $7",
    )
    .bind(state.as_str())
    .bind(clamp(now_ms))
    .bind(i64::from(event.attempts))
    .bind(i64::from(event.deferrals))
    .bind(error)
    .bind(&event.id)
    .bind(EventState::Running.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// Makes running events pending again, due at `now_ms`: those whose claim ended, or all of
/// them when `all` (no other instance can be running any). Returns how many.
pub async fn reclaim(pool: &AnyPool, now_ms: u64, all: bool) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE events SET state = $1, run_at_ms = $2 \
         WHERE state = $3 AND (run_at_ms <= $2 OR $4 = 1)",
    )
    .bind(EventState::Pending.as_str())
    .bind(clamp(now_ms))
    .bind(EventState::Running.as_str())
    .bind(i64::from(all))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Makes pending events that never ran, and wait only because no worker could take them
/// (or the function was throttled), due at `now_ms`. Returns how many.
pub async fn expedite_waiting(pool: &AnyPool, now_ms: u64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "UPDATE events SET run_at_ms = $1 \
         WHERE state = $2 AND attempts = 0 AND deferrals > 0 AND run_at_ms > $1",
    )
    .bind(clamp(now_ms))
    .bind(EventState::Pending.as_str())
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

/// Removes events that finished before `before_ms`.
pub async fn prune(pool: &AnyPool, before_ms: u64) -> Result<u64, sqlx::Error> {
    let done =
        sqlx::query("DELETE FROM events WHERE finished_at_ms IS NOT NULL AND finished_at_ms < $1")
            .bind(clamp(before_ms))
            .execute(pool)
            .await?;
    Ok(done.rows_affected())
}

fn event(sealer: &Sealer, row: Row) -> Result<Event, sqlx::Error> {
    let (id, account, function, qualifier, payload, attempts, deferrals, enqueued_at_ms) = row;
    let payload = if sealed::key_id(&payload).is_some() {
        sealer
            .open(&event_context(&id), &payload)
            .map_err(sql_error)?
            .to_vec()
    } else {
        // Queued before payloads were sealed: base64.
        STANDARD
            .decode(payload)
            .map_err(|e| sqlx::Error::Decode(format!("event {id}'s payload: {e}").into()))?
    };
    Ok(Event {
        id,
        account,
        function,
        qualifier,
        payload,
        attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        deferrals: u32::try_from(deferrals).unwrap_or(u32::MAX),
        enqueued_at_ms: unclamp(enqueued_at_ms),
    })
}

/// A time as BIGINT.
fn clamp(ms: u64) -> i64 {
    i64::try_from(ms).unwrap_or(i64::MAX)
}

fn unclamp(ms: i64) -> u64 {
    u64::try_from(ms).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, now: u64) -> Event {
        Event {
            id: id.into(),
            account: "111122223333".into(),
            function: "f".into(),
            qualifier: Some("live".into()),
            payload: vec![0, 159, 146, 150, b'{'],
            attempts: 0,
            deferrals: 0,
            enqueued_at_ms: now,
        }
    }

    #[tokio::test]
    async fn claims_once_retries_finishes_reclaims_and_prunes() {
        let (_dir, registry) = crate::fixtures::registry().await;
        let pool = registry.pool();
        insert(&registry, &sample("a", 1000)).await.unwrap();
        insert(&registry, &sample("b", 1001)).await.unwrap();
        assert_eq!(next_due(pool).await.unwrap(), Some(1000));
        assert_eq!(due(pool, 999, 10).await.unwrap(), Vec::<String>::new());
        assert_eq!(due(pool, 2000, 1).await.unwrap(), ["a"]);

        // One claim wins; the row comes back whole.
        let mut a = claim(&registry, "a", 2000, 9000).await.unwrap().unwrap();
        assert_eq!(a, sample("a", 1000));
        assert_eq!(claim(&registry, "a", 2000, 9000).await.unwrap(), None);
        assert_eq!(due(pool, 2000, 10).await.unwrap(), ["b"]);

        // A retry is not due before its time.
        a.attempts = 1;
        retry_at(pool, &a, 5000, "trap").await.unwrap();
        assert_eq!(claim(&registry, "a", 4999, 9000).await.unwrap(), None);
        let a = claim(&registry, "a", 5000, 9000).await.unwrap().unwrap();
        assert_eq!(a.attempts, 1);

        // Claims that ended go back; with `all`, every running one does.
        let b = claim(&registry, "b", 2000, 3000).await.unwrap().unwrap();
        assert_eq!(reclaim(pool, 3000, false).await.unwrap(), 1);
        assert_eq!(claim(&registry, "b", 3000, 9000).await.unwrap().unwrap(), b);
        assert_eq!(reclaim(pool, 3000, true).await.unwrap(), 2);
        let a = claim(&registry, "a", 3000, 9000).await.unwrap().unwrap();

        finish(pool, &a, EventState::Succeeded, None, 6000)
            .await
            .unwrap();
        let (state,): (String,) = sqlx::query_as("SELECT state FROM events WHERE id = 'a'")
            .fetch_one(pool)
            .await
            .unwrap();
        assert_eq!(state, "succeeded");
        assert_eq!(prune(pool, 6000).await.unwrap(), 0);
        assert_eq!(prune(pool, 6001).await.unwrap(), 1);
        assert_eq!(next_due(pool).await.unwrap(), Some(3000));
    }

    /// Queues `count` due events of `account` straight into the table (the payload is not
    /// read by `due`), the oldest at `from_ms`.
    async fn backlog(pool: &AnyPool, account: &str, count: usize, from_ms: u64) {
        let mut tx = pool.begin().await.unwrap();
        for chunk in (0..count).collect::<Vec<_>>().chunks(500) {
            let values: Vec<String> = chunk
                .iter()
                .map(|i| {
                    let at = from_ms + *i as u64;
                    format!(
                        "('{account}-{i:06}', '{account}', 'f', NULL, 'e30=', 0, 0, {at}, 'pending', {at})"
                    )
                })
                .collect();
            sqlx::query(&format!(
                "INSERT INTO events ({COLUMNS}, state, run_at_ms) VALUES {}",
                values.join(", ")
            ))
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        tx.commit().await.unwrap();
    }

    #[tokio::test]
    async fn due_events_take_turns_by_account_whatever_one_has_queued() {
        let (_dir, registry) = crate::fixtures::registry().await;
        let pool = registry.pool();
        // Account A queued 100,000 events before B queued its first.
        backlog(pool, "aaaaaaaaaaaa", 100_000, 1_000).await;
        let mut first = sample("b-first", 500_000);
        first.account = "bbbbbbbbbbbb".into();
        insert(&registry, &first).await.unwrap();
        let now = 1_000_000;

        let started = std::time::Instant::now();
        let two = due(pool, now, 2).await.unwrap();
        eprintln!("due over a 100,000-event backlog: {:?}", started.elapsed());
        assert_eq!(
            two,
            ["aaaaaaaaaaaa-000000", "b-first"],
            "one each, oldest first"
        );

        // While A's events run, B's comes first even for a single free slot.
        for id in ["aaaaaaaaaaaa-000000", "aaaaaaaaaaaa-000001"] {
            claim(&registry, id, now, now + 60_000).await.unwrap();
        }
        assert_eq!(due(pool, now, 1).await.unwrap(), ["b-first"]);
        let four = due(pool, now, 4).await.unwrap();
        assert_eq!(four[0], "b-first");
        assert_eq!(
            four[1..],
            [
                "aaaaaaaaaaaa-000002",
                "aaaaaaaaaaaa-000003",
                "aaaaaaaaaaaa-000004"
            ]
        );
        // Not yet due is not due, whoever it belongs to.
        assert_eq!(due(pool, 999, 5).await.unwrap(), Vec::<String>::new());
    }

    #[tokio::test]
    async fn payloads_are_sealed_and_old_base64_ones_still_run() {
        let (_dir, registry) = crate::fixtures::registry().await;
        let pool = registry.pool();
        let mut event = sample("secret", 1000);
        event.payload = b"{\"card\":\"4111111111111111\"}".to_vec();
        insert(&registry, &event).await.unwrap();
        let (stored,): (String,) = sqlx::query_as("SELECT payload FROM events WHERE id = 'secret'")
            .fetch_one(pool)
            .await
            .unwrap();
        assert!(stored.starts_with(sealed::PREFIX), "{stored}");
        assert!(!stored.contains("4111") && !stored.contains(&STANDARD.encode(&event.payload)));
        assert_eq!(
            claim(&registry, "secret", 2000, 9000).await.unwrap(),
            Some(event)
        );

        sqlx::query(&format!(
            "INSERT INTO events ({COLUMNS}, state, run_at_ms) \
             VALUES ('old', '111122223333', 'f', NULL, $1, 0, 0, 1000, 'pending', 1000)"
        ))
        .bind(STANDARD.encode(b"queued before sealing"))
        .execute(pool)
        .await
        .unwrap();
        let old = claim(&registry, "old", 2000, 9000).await.unwrap().unwrap();
        assert_eq!(old.payload, b"queued before sealing");
    }
}
