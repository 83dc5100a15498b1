//! Leaving the fleet gracefully: when the lease is ending (control says so, or the
//! worker's own clock), on SIGTERM or SIGINT, or when control no longer knows the worker,
//! it stops taking invocations (answering 503, which control takes as "try another
//! worker"), lets every invocation in progress finish, deregisters, and exits with
//! status 0. Its environments are shut down as the pool is dropped.

use std::fmt;
use std::sync::atomic::Ordering;

use tokio::sync::watch;

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

/// Stops taking invocations, waits for those in progress, and deregisters.
pub async fn drain(worker: &Worker, control: &ControlClient, reason: DrainReason) {
    log::info!("draining: {reason}");
    worker.draining.store(true, Ordering::SeqCst);
    loop {
        // Created before the check, so the last invocation's wake-up is not missed.
        let idle = worker.idle.notified();
        if worker.in_flight() == 0 {
            break;
        }
        idle.await;
    }
    if reason == DrainReason::Unknown {
        return;
    }
    match control.deregister().await {
        Ok(()) => log::info!("deregistered"),
        Err(e) => log::warn!("deregistering: {e}"),
    }
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
