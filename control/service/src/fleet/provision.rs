//! Provisioned concurrency on the fleet. Every provisioned configuration becomes a demand
//! for initialized environments of one [`VersionKey`] (an alias's count is split between
//! its versions by its routing weights), and [`place`] spreads each demand over the live
//! workers (active, heard from, not draining):
//!
//! - **stable**: a worker keeps its share of a version while it stays live and the demand
//!   stays, so nothing moves when nothing changed; a lower count takes from the largest
//!   shares first. A worker that joins takes new and unplaced demand, not existing shares;
//! - **spread**: each environment still to place goes to the worker holding the fewest of
//!   that version, then to the one with the most room, so one worker's loss costs little;
//! - **within capacity**: a worker's shares fit its `max_environments` and `memory_mib`
//!   (from its registration); what fits nowhere stays unplaced, and its configuration
//!   reports `FAILED`.
//!
//! [`run`] recomputes the placement every heartbeat interval (workers join, die, drain and
//! leave on that time scale) and at once when a configuration changes
//! ([`Placement::changed`]). Each heartbeat answer lists the worker's shares
//! ([`Placement::assignments`]); a version left out of the list is released there.
//! Allocation is read back from the workers' heartbeat inventories ([`Allocation`]), along
//! with the versions a worker holding a share reports it cannot initialize.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ember_fleet::messages::{Provisioned, VersionKey};
use tokio::sync::{Notify, OnceCell};

use super::function_config::{self as config, GRANT_LIFETIME};
use super::state::Workers;
use super::Fleet;
use ember_core::clock;
use ember_core::grants::Holder;
use ember_store::aliases::{self, Routing};
use ember_store::concurrency;
use ember_store::functions::{self, Version};

/// Per version: how many environments each worker (by id) keeps.
pub type Shares = BTreeMap<VersionKey, BTreeMap<String, u32>>;

/// One provisioned configuration: a function's version or alias.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct ConfigId {
    pub account: String,
    pub function: String,
    pub qualifier: String,
}

/// Environments of one version to keep initialized somewhere in the fleet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    pub memory_mib: u64,
    pub count: u32,
}

/// What a worker can hold, from its registration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Room {
    pub id: String,
    pub environments: u32,
    pub memory_mib: u64,
}

/// A configuration's environments as the workers' heartbeats report them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// Initialized environments on the workers holding its shares.
    pub allocated: u32,
    /// Of those, the ones idle: ready for an invocation.
    pub available: u32,
    /// Environments no live worker has room for.
    pub unplaced: u32,
    /// Why a worker holding a share cannot create its environments (its init phase
    /// failed, its code could not be fetched), while it says so.
    pub failure: Option<String>,
}

/// The last placement.
#[derive(Debug, Default)]
struct Placed {
    /// Each configuration's part of each version's demand.
    configs: HashMap<ConfigId, Vec<(VersionKey, u32)>>,
    demands: BTreeMap<VersionKey, Demand>,
    /// What a worker needs to create environments of each placed version.
    versions: HashMap<VersionKey, Arc<Version>>,
    shares: Shares,
    unplaced: BTreeMap<VersionKey, u32>,
}

/// The fleet's provisioned-concurrency placement, shared by [`run`], the heartbeat route
/// and the concurrency API.
#[derive(Debug, Default)]
pub struct Placement {
    placed: Mutex<Placed>,
    wake: Notify,
    /// Set once the first placement is computed: no heartbeat is answered before it, so a
    /// restarted control never tells workers to drop what they keep.
    first: OnceCell<()>,
}

impl Placement {
    fn lock(&self) -> MutexGuard<'_, Placed> {
        self.placed.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A configuration was created, changed or deleted: place again now.
    pub fn changed(&self) {
        self.wake.notify_one();
    }

    /// Worker `worker`'s shares, each with what it needs to create the environments (the
    /// version's configuration and a fresh grant for its code, issued to that worker).
    pub async fn assignments(&self, fleet: &Fleet, worker: &str) -> Vec<Provisioned> {
        self.first
            .get_or_init(|| async { self.recompute_logged(fleet).await })
            .await;
        let shares: Vec<(Arc<Version>, u32)> = {
            let placed = self.lock();
            placed
                .shares
                .iter()
                .filter_map(|(key, workers)| {
                    Some((placed.versions.get(key)?, workers.get(worker)?))
                })
                .map(|(version, count)| (version.clone(), *count))
                .collect()
        };
        let expires_at = clock::now_unix() + GRANT_LIFETIME;
        shares
            .into_iter()
            .filter_map(|(version, count)| {
                let grant = fleet
                    .grants
                    .issue(
                        &version.account_id,
                        &version.code.artifact_id,
                        Holder::Worker(worker),
                        expires_at,
                    )
                    .inspect_err(|e| tracing::error!(error = %e, "cannot grant provisioned code"))
                    .ok()?;
                Some(Provisioned {
                    function: config::function_config(&version, &fleet.region, grant),
                    count,
                })
            })
            .collect()
    }

    /// How far configuration `id` is allocated; `None` before it was first placed.
    pub fn allocation(&self, id: &ConfigId, workers: &Workers) -> Option<Allocation> {
        let placed = self.lock();
        let parts = placed.configs.get(id)?;
        let mut total = Allocation::default();
        for (key, part) in parts {
            let wanted = placed.demands.get(key).map_or(0, |d| d.count).max(1);
            let shares = placed.shares.get(key);
            let (allocated, available) = workers.read(|all| {
                let mut sums = (0, 0);
                for (id, share) in shares.into_iter().flatten() {
                    if let Some(worker) = all.get(id) {
                        let held = worker.held.get(key).copied().unwrap_or(0);
                        let idle = worker.idle.get(key).copied().unwrap_or(0);
                        sums.0 += held.min(*share);
                        sums.1 += idle.min(*share);
                        if total.failure.is_none() {
                            total.failure = worker.provision_failures.get(key).cloned();
                        }
                    }
                }
                sums
            });
            // A version that several configurations provision counts for each in proportion.
            let portion = |n: u32| (u64::from(n) * u64::from(*part) / u64::from(wanted)) as u32;
            total.allocated += portion(allocated);
            total.available += portion(available);
            let unplaced = placed.unplaced.get(key).copied().unwrap_or(0);
            if unplaced > 0 {
                // Any environment without room fails every configuration asking for it.
                total.unplaced += portion(unplaced).max(1);
            }
        }
        Some(total)
    }

    async fn recompute_logged(&self, fleet: &Fleet) {
        if let Err(e) = self.recompute(fleet).await {
            tracing::warn!(error = %e, "could not place provisioned concurrency");
        }
    }

    /// Reads every configuration, resolves it to versions and places them on the live
    /// workers, keeping the previous placement where it still holds.
    async fn recompute(&self, fleet: &Fleet) -> Result<(), sqlx::Error> {
        let pool = fleet.registry.pool();
        let mut configs: HashMap<ConfigId, Vec<(VersionKey, u32)>> = HashMap::new();
        let mut demands: BTreeMap<VersionKey, Demand> = BTreeMap::new();
        let mut versions = HashMap::new();
        for row in concurrency::all_provisioned(pool).await? {
            let id = ConfigId {
                account: row.account,
                function: row.function,
                qualifier: row.config.qualifier,
            };
            let Some(routing) =
                aliases::resolve(pool, &id.account, &id.function, &id.qualifier).await?
            else {
                continue;
            };
            let count = u32::try_from(row.config.requested).unwrap_or(0);
            let mut parts = Vec::new();
            for (number, n) in split(&routing, count) {
                let found =
                    functions::get_version(&fleet.registry, &id.account, &id.function, number)
                        .await?;
                let Some(version) = found else { continue };
                // The grant is left out: the key does not depend on it.
                let key = config::function_config(&version, &fleet.region, String::new()).key;
                let demand = demands.entry(key.clone()).or_insert(Demand {
                    memory_mib: u64::try_from(version.config.memory_size).unwrap_or(u64::MAX),
                    count: 0,
                });
                demand.count = demand.count.saturating_add(n);
                versions.insert(key.clone(), Arc::new(version));
                parts.push((key, n));
            }
            configs.insert(id, parts);
        }
        let settings = &fleet.settings;
        let now = clock::now_unix();
        let rooms: Vec<Room> = fleet.workers.read(|all| {
            all.values()
                .filter(|w| w.routable(settings, now))
                .map(|w| Room {
                    id: w.id.clone(),
                    environments: w.capacity.max_environments,
                    memory_mib: w.capacity.memory_mib,
                })
                .collect()
        });

        let mut placed = self.lock();
        let (shares, unplaced) = place(&placed.shares, &demands, &rooms);
        if shares != placed.shares {
            tracing::info!(?shares, ?unplaced, "provisioned concurrency placed");
        } else if unplaced != placed.unplaced {
            tracing::warn!(?unplaced, "provisioned concurrency without room");
        }
        *placed = Placed {
            configs,
            demands,
            versions,
            shares,
            unplaced,
        };
        Ok(())
    }
}

/// Places provisioned concurrency every heartbeat interval, and whenever a configuration
/// changes. Runs until the runtime stops.
pub async fn run(fleet: Arc<Fleet>) {
    let placement = &fleet.provisioned;
    let mut tick = tokio::time::interval(fleet.settings.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = placement.wake.notified() => {}
        }
        placement.recompute_logged(&fleet).await;
        let _ = placement.first.set(());
    }
}

/// An alias's count split between its versions by their weights (a version's own
/// configuration goes to itself).
fn split(routing: &Routing, count: u32) -> Vec<(&str, u32)> {
    let primary = routing.primary.as_str();
    match &routing.additional {
        Some((version, weight)) => {
            let additional = ((f64::from(count) * weight).round() as u32).min(count);
            vec![
                (primary, count - additional),
                (version.as_str(), additional),
            ]
        }
        None => vec![(primary, count)],
    }
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .collect()
}

/// Free room per worker: environments and MiB.
type Free<'a> = BTreeMap<&'a str, (u32, u64)>;

/// How many environments of `memory_mib` still fit in `free`.
fn fits(free: (u32, u64), memory_mib: u64) -> u32 {
    let by_memory = free.1 / memory_mib.max(1);
    free.0.min(u32::try_from(by_memory).unwrap_or(u32::MAX))
}

/// Moves `n` environments of `memory_mib` out of (positive `n`) or back into `free`.
fn take(free: &mut (u32, u64), n: i64, memory_mib: u64) {
    let envs = free.0 as i64 - n;
    free.0 = u32::try_from(envs).unwrap_or(0);
    free.1 = (free.1 as i128 - i128::from(n) * i128::from(memory_mib)).max(0) as u64;
}

/// Places `demands` on the workers of `rooms`, keeping `previous` where it still holds;
/// returns the shares and, per version, what did not fit.
pub fn place(
    previous: &Shares,
    demands: &BTreeMap<VersionKey, Demand>,
    rooms: &[Room],
) -> (Shares, BTreeMap<VersionKey, u32>) {
    let mut free: Free<'_> = rooms
        .iter()
        .map(|r| (r.id.as_str(), (r.environments, r.memory_mib)))
        .collect();
    let mut shares = Shares::new();
    // Kept shares first, so that new demand never pushes out what is placed.
    for (key, demand) in demands {
        let mut kept = BTreeMap::new();
        for (id, before) in previous.get(key).into_iter().flatten() {
            if let Some(room) = free.get_mut(id.as_str()) {
                let n = (*before).min(fits(*room, demand.memory_mib));
                take(room, i64::from(n), demand.memory_mib);
                kept.insert(id.clone(), n);
            }
        }
        while kept.values().sum::<u32>() > demand.count {
            let (id, _) = kept
                .iter()
                .max_by_key(|(id, n)| (**n, (*id).clone()))
                .expect("a positive sum has a share");
            let id = id.clone();
            *kept.get_mut(&id).expect("just found") -= 1;
            take(
                free.get_mut(id.as_str()).expect("kept on a live worker"),
                -1,
                demand.memory_mib,
            );
        }
        kept.retain(|_, n| *n > 0);
        shares.insert(key.clone(), kept);
    }
    let mut unplaced = BTreeMap::new();
    for (key, demand) in demands {
        let placed = shares.entry(key.clone()).or_default();
        let mut missing = demand.count - placed.values().sum::<u32>();
        while missing > 0 {
            let best = free
                .iter()
                .filter(|(_, room)| fits(**room, demand.memory_mib) > 0)
                .min_by_key(|(id, room)| {
                    let held = placed.get(**id).copied().unwrap_or(0);
                    (held, std::cmp::Reverse(room.0), **id)
                })
                .map(|(id, _)| *id);
            let Some(id) = best else { break };
            take(free.get_mut(id).expect("just found"), 1, demand.memory_mib);
            *placed.entry(id.to_owned()).or_default() += 1;
            missing -= 1;
        }
        if missing > 0 {
            unplaced.insert(key.clone(), missing);
        }
    }
    shares.retain(|_, workers| !workers.is_empty());
    (shares, unplaced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::fixtures::{version_key as key, worker_row};

    fn room(id: &str, environments: u32, memory_mib: u64) -> Room {
        Room {
            id: id.into(),
            environments,
            memory_mib,
        }
    }

    fn demand(count: u32, memory_mib: u64) -> Demand {
        Demand { memory_mib, count }
    }

    fn on(shares: &Shares, version: &str) -> Vec<(String, u32)> {
        shares
            .get(&key(version))
            .into_iter()
            .flatten()
            .map(|(id, n)| (id.clone(), *n))
            .collect()
    }

    fn pairs(list: &[(&str, u32)]) -> Vec<(String, u32)> {
        list.iter().map(|(id, n)| ((*id).to_owned(), *n)).collect()
    }

    #[test]
    fn spreads_within_capacity_and_reports_what_does_not_fit() {
        let rooms = [room("w-a", 8, 1024), room("w-b", 8, 1024)];
        let demands = BTreeMap::from([(key("1"), demand(3, 128))]);
        let (shares, unplaced) = place(&Shares::new(), &demands, &rooms);
        assert_eq!(on(&shares, "1"), pairs(&[("w-a", 2), ("w-b", 1)]));
        assert!(unplaced.is_empty());

        // Memory binds before the environment count: 1024 MiB holds two of 512.
        let demands = BTreeMap::from([(key("1"), demand(5, 512))]);
        let (shares, unplaced) = place(&Shares::new(), &demands, &rooms);
        assert_eq!(on(&shares, "1"), pairs(&[("w-a", 2), ("w-b", 2)]));
        assert_eq!(unplaced[&key("1")], 1);

        // No worker at all: everything is unplaced.
        let (shares, unplaced) = place(&Shares::new(), &demands, &[]);
        assert!(shares.is_empty());
        assert_eq!(unplaced[&key("1")], 5);
    }

    #[test]
    fn keeps_shares_and_moves_only_what_a_lost_worker_held() {
        let rooms = [room("w-a", 4, 4096), room("w-b", 4, 4096)];
        let demands = BTreeMap::from([(key("1"), demand(2, 128)), (key("2"), demand(1, 128))]);
        let (first, _) = place(&Shares::new(), &demands, &rooms);
        assert_eq!(on(&first, "1"), pairs(&[("w-a", 1), ("w-b", 1)]));
        assert_eq!(on(&first, "2"), pairs(&[("w-a", 1)]));
        // Nothing changed: nothing moves, whatever the order of preference now says.
        let (again, _) = place(&first, &demands, &rooms);
        assert_eq!(again, first);

        // A worker joins: existing shares stay where they are.
        let three = [room("w-0", 4, 4096), rooms[0].clone(), rooms[1].clone()];
        let (joined, _) = place(&first, &demands, &three);
        assert_eq!(joined, first);

        // w-a dies: its shares go to the others, w-b keeps its own.
        let (after, unplaced) = place(&joined, &demands, &[three[0].clone(), three[2].clone()]);
        assert_eq!(on(&after, "1"), pairs(&[("w-0", 1), ("w-b", 1)]));
        assert_eq!(on(&after, "2"), pairs(&[("w-0", 1)]));
        assert!(unplaced.is_empty());
    }

    #[test]
    fn counts_going_down_take_from_the_largest_share_and_zero_releases() {
        let rooms = [room("w-a", 8, 8192), room("w-b", 8, 8192)];
        let mut demands = BTreeMap::from([(key("1"), demand(5, 128))]);
        let (five, _) = place(&Shares::new(), &demands, &rooms);
        assert_eq!(on(&five, "1"), pairs(&[("w-a", 3), ("w-b", 2)]));
        demands.insert(key("1"), demand(2, 128));
        let (two, _) = place(&five, &demands, &rooms);
        assert_eq!(on(&two, "1"), pairs(&[("w-a", 1), ("w-b", 1)]));
        let (none, _) = place(&two, &BTreeMap::new(), &rooms);
        assert!(none.is_empty());
    }

    #[test]
    fn allocation_counts_what_heartbeats_report_up_to_each_share() {
        use ember_fleet::messages::{HeartbeatRequest, InventoryEntry, ProvisionFailure};

        let workers = Workers::default();
        // w-c holds no share.
        for id in ["w-a", "w-b", "w-c"] {
            workers.add(&worker_row(id, 8, 1000));
        }
        let id = ConfigId {
            account: "a".into(),
            function: "f".into(),
            qualifier: "1".into(),
        };
        let placement = Placement::default();
        assert_eq!(placement.allocation(&id, &workers), None, "not placed yet");
        let demands = BTreeMap::from([(key("1"), demand(3, 128))]);
        let rooms = [room("w-a", 8, 1024), room("w-b", 8, 1024)];
        let (shares, unplaced) = place(&Shares::new(), &demands, &rooms);
        *placement.lock() = Placed {
            configs: HashMap::from([(id.clone(), vec![(key("1"), 3)])]),
            demands,
            versions: HashMap::new(),
            shares,
            unplaced,
        };
        let report = |idle, busy| HeartbeatRequest {
            inventory: vec![InventoryEntry {
                key: key("1"),
                idle,
                busy,
            }],
            ..HeartbeatRequest::default()
        };
        // w-a's share is 2, w-b's 1; w-b also runs an environment of its own.
        workers.expect("w-a", &key("1"), 128, 2);
        workers.expect("w-b", &key("1"), 128, 2);
        workers
            .heartbeat("w-a", &report(1, 0), 0, |_| false)
            .unwrap();
        workers
            .heartbeat("w-b", &report(1, 1), 0, |_| false)
            .unwrap();
        let got = placement.allocation(&id, &workers).unwrap();
        assert_eq!((got.allocated, got.available, got.unplaced), (2, 2, 0));
        workers
            .heartbeat("w-a", &report(1, 1), 0, |_| false)
            .unwrap();
        let got = placement.allocation(&id, &workers).unwrap();
        assert_eq!((got.allocated, got.available), (3, 2));
        assert_eq!(got.failure, None);

        // A worker that cannot initialize the version says why; only one holding a share
        // of it counts (and w-c was never placed any).
        let failing = HeartbeatRequest {
            provision_failures: vec![ProvisionFailure {
                key: key("1"),
                reason: "init error: unreachable".into(),
            }],
            ..report(0, 0)
        };
        workers.heartbeat("w-c", &failing, 0, |_| false).unwrap();
        assert_eq!(placement.allocation(&id, &workers).unwrap().failure, None);
        workers.heartbeat("w-b", &failing, 0, |_| false).unwrap();
        let got = placement.allocation(&id, &workers).unwrap();
        assert_eq!(got.failure.as_deref(), Some("init error: unreachable"));
        assert_eq!(got.allocated, 2);
        workers
            .heartbeat("w-b", &report(1, 0), 0, |_| false)
            .unwrap();
        assert_eq!(placement.allocation(&id, &workers).unwrap().failure, None);
    }

    #[test]
    fn aliases_split_their_count_by_weight() {
        let plain = Routing {
            primary: "1".into(),
            additional: None,
        };
        assert_eq!(split(&plain, 3), [("1", 3)]);
        let weighted = Routing {
            primary: "1".into(),
            additional: Some(("2".into(), 0.25)),
        };
        assert_eq!(split(&weighted, 4), [("1", 3), ("2", 1)]);
        assert_eq!(split(&weighted, 1), [("1", 1)]);
    }
}
