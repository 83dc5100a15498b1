//! Asynchronous (`Event`) invocations, as Lambda runs them: the Invoke API stores the event
//! ([`Events::enqueue`]) and answers 202; the [`executor`] runs it later through
//! the router's invoke, the synchronous path, and retries it on failure.
//!
//! - Stored before the answer, in SQL ([`queue`]), so nothing acknowledged is lost by a
//!   restart or a crash; an attempt a crash interrupted runs again (at least once).
//! - A function error or a failed worker costs an attempt: [`MAX_RETRIES`] retries, the
//!   first after [`EventSettings::retry_delay`], the second after twice that.
//! - A throttle or no worker costs none: the event waits (1 s, doubling, at most the retry
//!   delay) until [`EventSettings::max_age`], then it expires unrun.
//! - An event whose function, version or alias was deleted meanwhile is dropped.
//!
//! Finished events keep their outcome for a day.

pub mod executor;

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ember_store::events as queue;
use tokio::sync::Notify;

use crate::router::{Invocation, Invoker};

/// The largest asynchronous event, as Lambda's limit for `Event` invocations: 256 KiB.
pub const PAYLOAD_MAX: usize = 256 * 1024;

/// Retries after the first attempt, as Lambda's default `MaximumRetryAttempts`.
pub const MAX_RETRIES: u32 = 2;

/// How events are run; `Default` is Lambda's.
#[derive(Clone, Debug)]
pub struct EventSettings {
    /// Wait before the first retry; the second waits twice as long (Lambda: about a
    /// minute, then two).
    pub retry_delay: Duration,
    /// Events still not run this long after they came are discarded (Lambda's
    /// `MaximumEventAgeInSeconds`, 6 hours by default).
    pub max_age: Duration,
    /// Events this instance runs at once.
    pub parallelism: usize,
}

impl Default for EventSettings {
    fn default() -> EventSettings {
        EventSettings {
            retry_delay: Duration::from_secs(60),
            max_age: Duration::from_secs(6 * 3600),
            parallelism: 32,
        }
    }
}

/// The event queue's side of the service: what the API enqueues into and the
/// [`executor`] runs from.
#[derive(Debug)]
pub struct Events {
    /// Runs each attempt, as a synchronous invocation would.
    pub invoker: Arc<Invoker>,
    pub settings: EventSettings,
    /// Wakes the executor: an event was enqueued or finished.
    ready: Notify,
}

impl Events {
    pub fn new(invoker: Arc<Invoker>, settings: EventSettings) -> Events {
        Events {
            invoker,
            settings,
            ready: Notify::new(),
        }
    }

    /// Stores `invocation` as a pending event (its request id becomes the event's id) and
    /// wakes the executor. The event is committed when this returns.
    pub async fn enqueue(&self, invocation: Invocation) -> Result<(), sqlx::Error> {
        let event = queue::Event {
            id: invocation.request_id,
            account: invocation.account,
            function: invocation.function,
            qualifier: invocation.qualifier,
            payload: invocation.payload,
            attempts: 0,
            deferrals: 0,
            enqueued_at_ms: now_ms(),
        };
        queue::insert(&self.invoker.registry, &event).await?;
        self.ready.notify_one();
        Ok(())
    }

    /// A worker joined: events that wait only for one run now rather than at their next
    /// backoff.
    pub async fn worker_joined(&self) {
        match queue::expedite_waiting(self.invoker.registry.pool(), now_ms()).await {
            Ok(0) => {}
            Ok(_) => self.ready.notify_one(),
            Err(e) => tracing::warn!(error = %e, "could not wake the waiting events"),
        }
    }
}

/// Milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
