//! Test fixtures the fleet's and the router's unit tests share.

use ember_fleet::messages::{Capacity, VersionKey};

use ember_store::workers::{WorkerRow, WorkerState};

/// An active worker `id` (2 vCPUs, 1 GiB) holding up to `max_environments`, its lease
/// ending at `lease_expires_at`.
pub fn worker_row(id: &str, max_environments: u32, lease_expires_at: u64) -> WorkerRow {
    WorkerRow {
        id: id.into(),
        name: id.into(),
        address: format!("{id}:1"),
        capacity: Capacity {
            vcpus: 2,
            memory_mib: 1024,
            max_environments,
        },
        registered_at: 0,
        last_heartbeat: 0,
        lease_expires_at,
        state: WorkerState::Active,
        token_id: "jt-test".into(),
    }
}

/// Version `version` of function `f` in account `a`.
pub fn version_key(version: &str) -> VersionKey {
    VersionKey {
        account: "a".into(),
        function: "f".into(),
        version: version.into(),
        config_digest: "d".into(),
    }
}
