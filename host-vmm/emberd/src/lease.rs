//! Leaving the fleet gracefully: when the lease is ending (control says so, or the
//! worker's own clock), on SIGTERM or SIGINT, or when control no longer knows the worker,
//! it stops taking invocations (answering 503, which control takes as "try another
//! worker"), lets every invocation in progress finish, deregisters, and exits with
//! status 0. Its environments are shut down as the pool is dropped.
//!
//! Every invocation ends by its deadline (the VMM's watchdog stops its VM then), so a
//! drain ends too; still, it waits no longer than [`DRAIN_LIMIT`]: past that, the worker
//! deregisters and exits with whatever is left running (its VMs go with the process).

use std::fmt;
use std::sync::atomic::Ordering;
use std::time::Duration;

use ember_vmm::function::MAX_TIMEOUT;
use tokio::sync::{watch, Notify};

use crate::control::ControlClient;
use crate::Worker;

/// Why the worker drains.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DrainReason {
    /// Control said the lease is within its drain margin.
    LeaseEnding,
    /// The lease ended by the worker's own clock (control unreachable).
    LeaseEnded,
    /// SIGTERM or SIGINT.
    Signal,
    /// Control does not know this worker any more.
    Unknown,
}

impl fmt::Display for DrainReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            DrainReason::LeaseEnding => "the lease is ending",
            DrainReason::LeaseEnded => "the lease has ended",
            DrainReason::Signal => "asked to stop",
            DrainReason::Unknown => "control no longer knows this worker",
        })
    }
}

/// Starts draining for `reason`, unless it started already.
pub fn start(drain: &watch::Sender<Option<DrainReason>>, reason: DrainReason) {
    drain.send_if_modified(|current| {
        if current.is_some() {
            return false;
        }
        *current = Some(reason);
        true
    });
}

/// The longest a drain waits for the invocations in progress: the longest a function may
/// run, an init phase before it, and a margin.
pub const DRAIN_LIMIT: Duration = MAX_TIMEOUT.saturating_add(Duration::from_secs(60));

/// Stops taking invocations, waits for those in progress (at most [`DRAIN_LIMIT`]), and
/// deregisters.
pub async fn drain(worker: &Worker, control: &ControlClient, reason: DrainReason) {
    log::info!("draining: {reason}");
    worker.draining.store(true, Ordering::SeqCst);
    if let Err(left) = wait_idle(|| worker.in_flight(), &worker.idle, DRAIN_LIMIT).await {
        log::warn!(
            "draining: {left} invocations still running after {}s; leaving without them",
            DRAIN_LIMIT.as_secs()
        );
    }
    if reason == DrainReason::Unknown {
        return;
    }
    match control.deregister().await {
        Ok(()) => log::info!("deregistered"),
        Err(e) => log::warn!("deregistering: {e}"),
    }
}

/// Waits until `in_flight` is 0 (`idle` is notified when it drops to 0), for at most
/// `limit`; `Err` with how many are left after that.
async fn wait_idle(in_flight: impl Fn() -> u32, idle: &Notify, limit: Duration) -> Result<(), u32> {
    let until_idle = async {
        loop {
            // Created before the check, so the last invocation's wake-up is not missed.
            let notified = idle.notified();
            if in_flight() == 0 {
                return;
            }
            notified.await;
        }
    };
    tokio::time::timeout(limit, until_idle)
        .await
        .map_err(|_| in_flight())
}

/// Starts draining for [`DrainReason::Signal`] on the first SIGTERM or SIGINT. The
/// signals are blocked in this thread (and so in every thread it starts later) and taken
/// by a thread of their own.
pub fn on_termination_signal(drain: watch::Sender<Option<DrainReason>>) -> std::io::Result<()> {
    // SAFETY: sigemptyset/sigaddset write only the local set; pthread_sigmask changes only
    // this thread's mask.
    let set = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut signal = 0;
            // SAFETY: a valid set, and a place for the signal number.
            if unsafe { libc::sigwait(&set, &mut signal) } == 0 {
                start(&drain, DrainReason::Signal);
            }
        })
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;
    use std::sync::Arc;
    use std::time::Instant;

    #[tokio::test]
    async fn a_drain_with_a_stuck_invocation_ends_at_its_limit() {
        let in_flight = AtomicU32::new(1);
        let idle = Notify::new();
        let start = Instant::now();
        let limit = Duration::from_millis(200);
        let waited = tokio::time::timeout(
            Duration::from_secs(10),
            wait_idle(|| in_flight.load(Ordering::SeqCst), &idle, limit),
        )
        .await
        .expect("the drain has a hard limit");
        assert_eq!(waited, Err(1));
        assert!(start.elapsed() < limit + Duration::from_secs(1));
    }

    #[tokio::test]
    async fn a_drain_ends_when_the_last_invocation_does() {
        let in_flight = Arc::new(AtomicU32::new(1));
        let idle = Arc::new(Notify::new());
        let (count, wake) = (in_flight.clone(), idle.clone());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            count.store(0, Ordering::SeqCst);
            wake.notify_waiters();
        });
        let waited = wait_idle(
            || in_flight.load(Ordering::SeqCst),
            &idle,
            Duration::from_secs(10),
        )
        .await;
        assert_eq!(waited, Ok(()));
        assert!(DRAIN_LIMIT > MAX_TIMEOUT);
    }
}
