//! The loop that runs queued events: it claims due events while it has free slots
//! ([`EventSettings::parallelism`]), accounts taking turns ([`queue::due`]), runs each in its own task through
//! [`router::invoke`], and records what happened. It wakes when an event is enqueued or a
//! slot frees up ([`Events::enqueue`], a finished attempt), when the next retry is due, and at least every
//! `POLL` for events another instance enqueued on a shared database.
//!
//! A claim lasts `CLAIM`, longer than any attempt can take; an event still `running`
//! after its claim ended lost its instance and is run again. At start, an instance on
//! SQLite (the only one on its database) takes back every running event at once.

use std::sync::Arc;
use std::time::Duration;

use ember_fleet::messages::Status;
use sqlx::AnyPool;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::{now_ms, EventSettings, Events, MAX_RETRIES};
use crate::router::{self, Invocation, InvokeError, Invoked};
use ember_store::events::{self as queue, Event, EventState};

/// The longest the executor sleeps between looks at the queue.
const POLL: Duration = Duration::from_secs(5);

/// How long a claim lasts: [`router::ATTEMPTS`] workers, each for the longest timeout (15
/// minutes) and some margin.
const CLAIM: Duration = Duration::from_secs(50 * 60);

/// Finished events are kept this long, then pruned.
const KEEP_FINISHED: Duration = Duration::from_secs(86_400);

/// How often finished events are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// How often running events are checked for claims that ran out.
const RECLAIM_EVERY: Duration = Duration::from_secs(60);

/// The first wait for a throttle or a missing worker; it doubles up to [`DEFER_MAX`] (and
/// never beyond the retry delay), as Lambda backs off from 1 second to 5 minutes.
const DEFER_FIRST: Duration = Duration::from_secs(1);
const DEFER_MAX: Duration = Duration::from_secs(300);

/// The most of an error (which may come from a function) kept with an event.
const ERROR_MAX: usize = 1024;

/// Runs events until the runtime stops.
pub async fn run(events: Arc<Events>) {
    let pool = events.invoker.registry.pool();
    take_back_interrupted(pool).await;
    let slots = Arc::new(Semaphore::new(events.settings.parallelism));
    let mut chores = Chores::new(now_ms());
    loop {
        chores.run(pool, now_ms()).await;
        let wait = match dispatch(&events, &slots).await {
            Ok(wait) => wait,
            Err(e) => {
                tracing::error!(error = %e, "could not read the event queue");
                POLL
            }
        };
        tokio::select! {
            () = events.ready.notified() => {}
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// At start: events a stop interrupted become pending again. On SQLite this instance is the
/// only one, so every running event is; on a shared database, those whose claim ran out.
async fn take_back_interrupted(pool: &AnyPool) {
    let sole_instance = pool.connect_options().database_url.scheme() == "sqlite";
    loop {
        match queue::reclaim(pool, now_ms(), sole_instance).await {
            Ok(0) => return,
            Ok(n) => {
                tracing::warn!(events = n, "events interrupted by a stop run again");
                return;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot take back interrupted events; retrying");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}

/// The executor's periodic work besides running events, with when each was last done.
struct Chores {
    reclaimed_at: u64,
    pruned_at: u64,
}

impl Chores {
    fn new(now: u64) -> Chores {
        Chores {
            reclaimed_at: now,
            pruned_at: 0,
        }
    }

    /// Takes back events whose claim ran out (another instance died) and prunes old
    /// finished events, each when its time has come.
    async fn run(&mut self, pool: &AnyPool, now: u64) {
        if now >= self.reclaimed_at + millis(RECLAIM_EVERY) {
            self.reclaimed_at = now;
            match queue::reclaim(pool, now, false).await {
                Ok(0) => {}
                Ok(n) => tracing::warn!(events = n, "events whose claim ran out run again"),
                Err(e) => tracing::warn!(error = %e, "could not check for claims that ran out"),
            }
        }
        if now >= self.pruned_at + millis(PRUNE_EVERY) {
            self.pruned_at = now;
            match queue::prune(pool, now.saturating_sub(millis(KEEP_FINISHED))).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(events = n, "pruned finished events"),
                Err(e) => tracing::warn!(error = %e, "could not prune finished events"),
            }
        }
    }
}

/// Starts every due event it has a slot for; returns how long to sleep before the next
/// look.
async fn dispatch(events: &Arc<Events>, slots: &Arc<Semaphore>) -> Result<Duration, sqlx::Error> {
    let pool = events.invoker.registry.pool();
    loop {
        let free = slots.available_permits();
        if free == 0 {
            // A finishing event frees a slot and wakes the loop.
            return Ok(POLL);
        }
        let now = now_ms();
        let due = queue::due(pool, now, free).await?;
        for id in &due {
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                break;
            };
            if let Some(event) =
                queue::claim(&events.invoker.registry, id, now, now + millis(CLAIM)).await?
            {
                tokio::spawn(attempt(events.clone(), event, slot));
            }
        }
        if due.len() < free {
            break;
        }
    }
    Ok(match queue::next_due(pool).await? {
        Some(at) => Duration::from_millis(at.saturating_sub(now_ms())).min(POLL),
        None => POLL,
    })
}

/// Runs one attempt of `event` and records what comes of it.
async fn attempt(events: Arc<Events>, mut event: Event, slot: OwnedSemaphorePermit) {
    let settings = &events.settings;
    let outcome = if age(&event, now_ms()) >= settings.max_age {
        Outcome::TooOld
    } else {
        let invocation = Invocation {
            account: event.account.clone(),
            function: event.function.clone(),
            qualifier: event.qualifier.clone(),
            payload: event.payload.clone(),
            request_id: event.id.clone(),
        };
        Outcome::of(router::invoke(&events.invoker, invocation).await)
    };
    let step = next_step(&mut event, outcome, settings, now_ms());
    if let Err(e) = record(events.invoker.registry.pool(), &event, &step).await {
        // The claim runs out and the event runs again.
        tracing::error!(event = %event.id, error = %e, "could not record an event's attempt");
    }
    drop(slot);
    events.ready.notify_one();
}

/// How one attempt went.
#[derive(Debug)]
enum Outcome {
    Succeeded,
    /// The function failed, or its worker did: costs an attempt.
    Failed(String),
    /// Throttled, or no worker to run it or with room for it: costs none.
    Deferred(String),
    /// The function, version or alias is gone.
    Gone,
    /// Older than the maximum age before it ran.
    TooOld,
}

impl Outcome {
    fn of(result: Result<Invoked, InvokeError>) -> Outcome {
        match result {
            Ok(invoked) if invoked.status == Status::Success => Outcome::Succeeded,
            Ok(invoked) => Outcome::Failed(function_error(&invoked)),
            Err(InvokeError::NotFound) => Outcome::Gone,
            Err(
                e @ (InvokeError::Throttled { .. }
                | InvokeError::NoWorker
                | InvokeError::NoCapacity),
            ) => Outcome::Deferred(e.to_string()),
            Err(e @ (InvokeError::WorkerFailed(_) | InvokeError::Internal(_))) => {
                Outcome::Failed(e.to_string())
            }
        }
    }
}

/// What becomes of an event after an attempt.
#[derive(Debug, PartialEq, Eq)]
enum Step {
    Finish(EventState, Option<String>),
    Retry { at_ms: u64, error: String },
}

/// Counts the attempt into `event` and decides its next step.
fn next_step(event: &mut Event, outcome: Outcome, settings: &EventSettings, now: u64) -> Step {
    match outcome {
        Outcome::Succeeded => {
            event.attempts += 1;
            Step::Finish(EventState::Succeeded, None)
        }
        Outcome::Gone => Step::Finish(EventState::Dropped, Some(InvokeError::NotFound.to_string())),
        Outcome::TooOld => Step::Finish(
            EventState::Expired,
            Some("older than the maximum event age".to_owned()),
        ),
        Outcome::Failed(error) => {
            event.attempts += 1;
            if event.attempts > MAX_RETRIES {
                return Step::Finish(EventState::Failed, Some(error));
            }
            let delay = settings
                .retry_delay
                .saturating_mul(2u32.pow(event.attempts - 1));
            Step::Retry {
                at_ms: now + millis(delay),
                error,
            }
        }
        Outcome::Deferred(error) => {
            event.deferrals += 1;
            if age(event, now) >= settings.max_age {
                return Step::Finish(EventState::Expired, Some(error));
            }
            let doubled = DEFER_FIRST.saturating_mul(2u32.saturating_pow(event.deferrals - 1));
            let delay = doubled.min(DEFER_MAX).min(settings.retry_delay);
            Step::Retry {
                at_ms: now + millis(delay),
                error,
            }
        }
    }
}

/// Writes `step` and logs the events that end without success.
async fn record(pool: &AnyPool, event: &Event, step: &Step) -> Result<(), sqlx::Error> {
    match step {
        Step::Retry { at_ms, error } => queue::retry_at(pool, event, *at_ms, error).await,
        Step::Finish(state, error) => {
            let reason = error.as_deref().unwrap_or_default();
            match state {
                EventState::Failed => tracing::warn!(event = %event.id, function = %event.function,
                    attempts = event.attempts, %reason, "event failed after its retries"),
                EventState::Expired => {
                    tracing::warn!(event = %event.id, function = %event.function,
                    %reason, "event discarded: older than the maximum event age")
                }
                EventState::Dropped => {
                    tracing::info!(event = %event.id, function = %event.function,
                    "event dropped: its function no longer exists")
                }
                _ => {}
            }
            queue::finish(pool, event, *state, error.as_deref(), now_ms()).await
        }
    }
}

/// `TYPE: message` of a function error, cut to [`ERROR_MAX`] bytes (it comes from the
/// function, through its worker).
fn function_error(invoked: &Invoked) -> String {
    let message = serde_json::from_slice::<serde_json::Value>(&invoked.payload)
        .ok()
        .and_then(|body| body["errorMessage"].as_str().map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&invoked.payload).into_owned());
    let kind = invoked.error_type.as_deref().unwrap_or("Unhandled");
    let mut text = format!("{kind}: {message}");
    if text.len() > ERROR_MAX {
        let mut end = ERROR_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    text
}

/// How long ago `event` came.
fn age(event: &Event, now: u64) -> Duration {
    Duration::from_millis(now.saturating_sub(event.enqueued_at_ms))
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> Event {
        Event {
            id: "e".into(),
            account: "a".into(),
            function: "f".into(),
            qualifier: None,
            payload: b"{}".to_vec(),
            attempts: 0,
            deferrals: 0,
            enqueued_at_ms: 1_000,
        }
    }

    fn settings() -> EventSettings {
        EventSettings {
            retry_delay: Duration::from_secs(60),
            max_age: Duration::from_secs(3600),
            parallelism: 1,
        }
    }

    #[test]
    fn failures_retry_twice_after_one_then_two_delays() {
        let (mut e, s) = (event(), settings());
        let fail = || Outcome::Failed("trap".into());
        assert_eq!(
            next_step(&mut e, fail(), &s, 10_000),
            Step::Retry {
                at_ms: 70_000,
                error: "trap".into()
            }
        );
        assert_eq!(
            next_step(&mut e, fail(), &s, 70_000),
            Step::Retry {
                at_ms: 190_000,
                error: "trap".into()
            }
        );
        assert_eq!(
            next_step(&mut e, fail(), &s, 190_000),
            Step::Finish(EventState::Failed, Some("trap".into()))
        );
        assert_eq!(e.attempts, 3);
    }

    #[test]
    fn throttles_wait_without_an_attempt_until_the_maximum_age() {
        let (mut e, s) = (event(), settings());
        let deferred = || Outcome::Deferred("no worker".into());
        let mut waits = Vec::new();
        for _ in 0..8 {
            match next_step(&mut e, deferred(), &s, 2_000) {
                Step::Retry { at_ms, .. } => waits.push(at_ms - 2_000),
                other => panic!("{other:?}"),
            }
        }
        // 1 s doubling, capped by the 60 s retry delay.
        assert_eq!(
            waits,
            [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000]
        );
        assert_eq!(e.attempts, 0);
        assert_eq!(e.deferrals, 8);
        assert_eq!(
            next_step(&mut e, deferred(), &s, 1_000 + 3_600_000),
            Step::Finish(EventState::Expired, Some("no worker".into()))
        );
        let mut many = event();
        many.deferrals = 100;
        assert!(matches!(
            next_step(&mut many, deferred(), &s, 2_000),
            Step::Retry { at_ms: 62_000, .. }
        ));
    }

    #[test]
    fn successes_count_and_missing_functions_drop() {
        let (mut e, s) = (event(), settings());
        assert_eq!(
            next_step(&mut e, Outcome::Succeeded, &s, 2_000),
            Step::Finish(EventState::Succeeded, None)
        );
        assert_eq!(e.attempts, 1);
        assert!(matches!(
            next_step(&mut e, Outcome::Gone, &s, 2_000),
            Step::Finish(EventState::Dropped, Some(_))
        ));
        assert!(matches!(
            Outcome::of(Err(InvokeError::Throttled {
                limit: ember_store::concurrency::InvokeLimit::Unreserved(1)
            })),
            Outcome::Deferred(_)
        ));
        assert!(matches!(
            Outcome::of(Err(InvokeError::WorkerFailed("reset".into()))),
            Outcome::Failed(_)
        ));
    }

    #[test]
    fn function_errors_are_cut_to_a_kilobyte() {
        let invoked = |payload: Vec<u8>| Invoked {
            version: "1".into(),
            worker_id: "w".into(),
            status: Status::FunctionError,
            payload,
            error_type: Some("Runtime.Trap".into()),
            log_tail: String::new(),
            init_us: None,
        };
        let short = serde_json::to_vec(&serde_json::json!({"errorMessage": "unreachable"}));
        assert_eq!(
            function_error(&invoked(short.unwrap())),
            "Runtime.Trap: unreachable"
        );
        let long = function_error(&invoked("é".repeat(2000).into_bytes()));
        assert!(long.len() <= ERROR_MAX && long.len() > ERROR_MAX - 2);
    }
}
