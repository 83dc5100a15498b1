//! Heartbeats: every interval the worker tells control what it holds (environments per
//! version, idle and busy), what runs and whether it is draining; the answer says when to
//! drain and which versions to keep initialized environments of ([`Provisioning`]), and
//! the next heartbeat says which of those it could not create, and why. A
//! worker that cannot reach control keeps trying and keeps serving; it drains on its own
//! once its lease has ended by its own clock, and when control no longer knows it (its
//! registration was removed), since it cannot heartbeat its way back in.

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use reqwest::StatusCode;
use tokio::sync::watch;

use crate::control::{CallError, ControlClient};
use crate::lease::{self, DrainReason};
use crate::provisioning::Provisioning;
use crate::Worker;

/// Heartbeats until aborted, once the worker has drained and deregistered.
pub async fn run(
    worker: Arc<Worker>,
    control: Arc<ControlClient>,
    interval: Duration,
    mut lease_expires_at: u64,
    drain: watch::Sender<Option<DrainReason>>,
) {
    let provisioning = Provisioning::default();
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if now_unix() >= lease_expires_at {
            lease::start(&drain, DrainReason::LeaseEnded);
        }
        let report = worker.report(provisioning.failures());
        match control.heartbeat(&report).await {
            Ok(answer) => {
                lease_expires_at = answer.lease_expires_at;
                provisioning.apply(&worker, answer.provisioned);
                if answer.drain {
                    lease::start(&drain, DrainReason::LeaseEnding);
                }
            }
            Err(CallError::Refused { status, message }) if status == StatusCode::FORBIDDEN => {
                log::error!("control refused the heartbeat: {message}");
                lease::start(&drain, DrainReason::Unknown);
            }
            Err(e) => log::warn!("heartbeat: {e}"),
        }
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}
