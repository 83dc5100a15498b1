//! Leases and liveness. A worker's lease runs from its registration for
//! [`super::FleetSettings::lease`] (at most [`MAX_LEASE`], 14 hours) and is never renewed:
//! a worker is replaced, not patched. Within the *drain margin* of its end, heartbeats
//! answer `drain`: the router sends it nothing new, it finishes what runs, deregisters and
//! exits. The margin is the larger of two heartbeats (so the worker hears it in time) and
//! a twentieth of the lease (42 minutes of a 14-hour lease: longer than the longest
//! invocation, 15 minutes, so nothing routed just before it is cut off by the end).
//!
//! A worker silent for [`super::FleetSettings::missed_heartbeats`] heartbeat intervals is
//! marked dead by [`watch`]; dead workers get no invocations until they heartbeat again.
//! [`watch`] also learns of workers the operator revoked beside the service (`ember worker
//! revoke`, a row in SQL): from then on they get nothing and are refused everything.

use std::sync::Arc;
use std::time::Duration;

use super::FleetSettings;
use ember_core::clock;
use ember_store::workers::{self as registry, WorkerState};

/// The longest lease: 14 hours.
pub const MAX_LEASE: Duration = Duration::from_secs(14 * 3600);

/// Rows of departed workers are kept this long for operators, then removed.
const KEEP_DEPARTED: u64 = 86_400;

impl FleetSettings {
    /// How long before its lease ends a worker stops getting invocations.
    pub fn drain_margin(&self) -> Duration {
        (self.heartbeat * 2).max(self.lease / 20)
    }

    /// How long a worker may stay silent before it is dead.
    pub fn silence_limit(&self) -> Duration {
        self.heartbeat * self.missed_heartbeats
    }

    /// Whether a lease ending at `lease_expires_at` is within its drain margin at `now`
    /// (Unix seconds).
    pub fn draining(&self, lease_expires_at: u64, now: u64) -> bool {
        now.saturating_add(self.drain_margin().as_secs_f64().ceil() as u64) >= lease_expires_at
    }
}

/// Marks silent workers dead and takes in revocations, every heartbeat interval, and
/// forgets departed ones after a day. Runs until the runtime stops.
pub async fn watch(fleet: Arc<super::Fleet>) {
    let mut tick = tokio::time::interval(fleet.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut pruned_at = 0;
    loop {
        tick.tick().await;
        let pool = fleet.registry.pool();
        for id in fleet
            .workers
            .mark_silent_dead(fleet.settings.silence_limit())
        {
            tracing::warn!(worker = %id, "worker missed its heartbeats: marked dead");
            if let Err(e) = registry::set_state(pool, &id, WorkerState::Dead).await {
                tracing::warn!(worker = %id, error = %e, "could not record the worker's death");
            }
        }
        match registry::revoked(pool).await {
            Ok(revoked) => {
                for id in revoked {
                    if fleet.workers.set_state(&id, WorkerState::Revoked) {
                        tracing::warn!(worker = %id, "worker revoked");
                        fleet.provisioned.changed();
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "could not read revoked workers"),
        }
        let now = clock::now_unix();
        if now >= pruned_at + 3600 {
            pruned_at = now;
            match registry::prune(pool, now.saturating_sub(KEEP_DEPARTED)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(workers = n, "forgot departed workers"),
                Err(e) => tracing::warn!(error = %e, "could not forget departed workers"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_margin_covers_two_heartbeats_or_a_twentieth_of_the_lease() {
        let production = FleetSettings::default();
        assert_eq!(production.drain_margin(), Duration::from_secs(2520));
        assert!(production.drain_margin() > Duration::from_secs(900));
        let short = FleetSettings {
            heartbeat: Duration::from_millis(200),
            missed_heartbeats: 3,
            lease: Duration::from_secs(4),
            ..FleetSettings::default()
        };
        assert_eq!(short.drain_margin(), Duration::from_millis(400));
        assert_eq!(short.silence_limit(), Duration::from_millis(600));
        // Whole seconds, rounded up.
        assert!(!short.draining(100, 98));
        assert!(short.draining(100, 99));
        assert!(!production.draining(10_000, 10_000 - 2521));
        assert!(production.draining(10_000, 10_000 - 2520));
    }
}
