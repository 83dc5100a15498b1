//! Workers in SQL (`migrations/0002_fleet.sql`): what must survive a control restart. The
//! live view (the service's fleet state) is rebuilt from these rows at start; heartbeats are written
//! back at most every [`PERSIST_EVERY`] seconds or when a worker's state changes.

use ember_fleet::messages::Capacity;
use sqlx::AnyPool;

/// How stale a stored `last_heartbeat` may get while the worker is live.
pub const PERSIST_EVERY: u64 = 10;

/// Where a worker is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WorkerState {
    /// Heartbeating, taking invocations.
    Active,
    /// Its lease is ending: it finishes what runs and takes nothing new.
    Draining,
    /// It missed heartbeats or failed mid-invocation; a heartbeat brings it back.
    Dead,
    /// It deregistered; its certificate is no longer accepted.
    Gone,
    /// The operator revoked it (`ember worker revoke`): as gone, and nothing brings it back.
    Revoked,
}

impl WorkerState {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkerState::Active => "active",
            WorkerState::Draining => "draining",
            WorkerState::Dead => "dead",
            WorkerState::Gone => "gone",
            WorkerState::Revoked => "revoked",
        }
    }

    /// Whether the worker has left the fleet for good: its certificate counts for nothing.
    pub fn departed(self) -> bool {
        matches!(self, WorkerState::Gone | WorkerState::Revoked)
    }

    fn parse(text: &str) -> Result<WorkerState, sqlx::Error> {
        Ok(match text {
            "active" => WorkerState::Active,
            "draining" => WorkerState::Draining,
            "dead" => WorkerState::Dead,
            "gone" => WorkerState::Gone,
            "revoked" => WorkerState::Revoked,
            other => {
                return Err(sqlx::Error::Decode(
                    format!("unknown worker state {other:?}").into(),
                ))
            }
        })
    }
}

/// One worker as stored.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerRow {
    pub id: String,
    pub name: String,
    pub address: String,
    pub capacity: Capacity,
    pub registered_at: u64,
    pub last_heartbeat: u64,
    pub lease_expires_at: u64,
    pub state: WorkerState,
    /// The join token it registered with (`ember_store::join_tokens`).
    pub token_id: String,
}

type Row = (
    String,
    String,
    String,
    i64,
    i64,
    i64,
    i64,
    i64,
    i64,
    String,
    String,
);

const COLUMNS: &str = "id, name, address, vcpus, memory_mib, max_environments, registered_at, \
     last_heartbeat, lease_expires_at, state, token_id";

/// Records a new worker.
pub async fn insert(pool: &AnyPool, worker: &WorkerRow) -> Result<(), sqlx::Error> {
    sqlx::query(&format!(
        "INSERT INTO workers ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
    ))
    .bind(&worker.id)
    .bind(&worker.name)
    .bind(&worker.address)
    .bind(i64::from(worker.capacity.vcpus))
    .bind(clamp(worker.capacity.memory_mib))
    .bind(i64::from(worker.capacity.max_environments))
    .bind(clamp(worker.registered_at))
    .bind(clamp(worker.last_heartbeat))
    .bind(clamp(worker.lease_expires_at))
    .bind(worker.state.as_str())
    .bind(&worker.token_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a heartbeat time and the state it left the worker in (a revoked worker stays
/// revoked, whatever a heartbeat in flight meanwhile says).
pub async fn update(
    pool: &AnyPool,
    id: &str,
    last_heartbeat: u64,
    state: WorkerState,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE workers SET last_heartbeat = $1, state = $2 WHERE id = $3 AND state <> 'revoked'",
    )
    .bind(clamp(last_heartbeat))
    .bind(state.as_str())
    .bind(id)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records a new state; whether the worker is there and was not revoked (revocation is
/// final).
pub async fn set_state(pool: &AnyPool, id: &str, state: WorkerState) -> Result<bool, sqlx::Error> {
    let done = sqlx::query("UPDATE workers SET state = $1 WHERE id = $2 AND state <> 'revoked'")
        .bind(state.as_str())
        .bind(id)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() == 1)
}

/// Every worker that has not left.
pub async fn current(pool: &AnyPool) -> Result<Vec<WorkerRow>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM workers WHERE state NOT IN ('gone', 'revoked') ORDER BY id"
    ))
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(from_row).collect()
}

/// Every worker stored, departed ones too, by id (for `ember worker list`).
pub async fn all(pool: &AnyPool) -> Result<Vec<WorkerRow>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(&format!("SELECT {COLUMNS} FROM workers ORDER BY id"))
        .fetch_all(pool)
        .await?;
    rows.into_iter().map(from_row).collect()
}

/// The ids of revoked workers (kept until pruned), for control to learn of revocations
/// made beside it.
pub async fn revoked(pool: &AnyPool) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT id FROM workers WHERE state = 'revoked' ORDER BY id")
        .fetch_all(pool)
        .await
}

/// Forgets workers that left, died or were revoked, last heard of before `before`;
/// returns how many. (A revoked worker's certificate ends with its lease, within a day.)
pub async fn prune(pool: &AnyPool, before: u64) -> Result<u64, sqlx::Error> {
    let done = sqlx::query(
        "DELETE FROM workers WHERE state IN ('gone', 'dead', 'revoked') AND last_heartbeat < $1",
    )
    .bind(clamp(before))
    .execute(pool)
    .await?;
    Ok(done.rows_affected())
}

fn from_row(row: Row) -> Result<WorkerRow, sqlx::Error> {
    let (
        id,
        name,
        address,
        vcpus,
        memory_mib,
        max_environments,
        registered,
        heard,
        lease,
        state,
        token_id,
    ) = row;
    let number = |value: i64| u64::try_from(value).unwrap_or(0);
    Ok(WorkerRow {
        id,
        name,
        address,
        capacity: Capacity {
            vcpus: u32::try_from(vcpus).unwrap_or(0),
            memory_mib: number(memory_mib),
            max_environments: u32::try_from(max_environments).unwrap_or(0),
        },
        registered_at: number(registered),
        last_heartbeat: number(heard),
        lease_expires_at: number(lease),
        state: WorkerState::parse(&state)?,
        token_id,
    })
}

/// SQL integers are signed 64-bit.
fn clamp(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Registry;

    #[tokio::test]
    async fn stores_updates_and_prunes_workers() {
        let dir = tempfile::tempdir().unwrap();
        let registry = Registry::open_sqlite(dir.path()).await.unwrap();
        let pool = registry.pool();
        let mut worker = WorkerRow {
            id: "w-1".into(),
            name: "host-a".into(),
            address: "127.0.0.1:7000".into(),
            capacity: Capacity {
                vcpus: 2,
                memory_mib: 4096,
                max_environments: 64,
            },
            registered_at: 100,
            last_heartbeat: 100,
            lease_expires_at: 50_500,
            state: WorkerState::Active,
            token_id: "jt-1".into(),
        };
        insert(pool, &worker).await.unwrap();
        assert_eq!(current(pool).await.unwrap(), [worker.clone()]);
        update(pool, "w-1", 150, WorkerState::Draining)
            .await
            .unwrap();
        worker.last_heartbeat = 150;
        worker.state = WorkerState::Draining;
        assert_eq!(current(pool).await.unwrap(), [worker.clone()]);
        assert_eq!(prune(pool, 200).await.unwrap(), 0, "draining is kept");
        set_state(pool, "w-1", WorkerState::Gone).await.unwrap();
        assert!(current(pool).await.unwrap().is_empty());
        assert_eq!(prune(pool, 151).await.unwrap(), 1);

        // Revocation is final: neither heartbeats nor states undo it.
        worker.id = "w-2".into();
        insert(pool, &worker).await.unwrap();
        assert!(set_state(pool, "w-2", WorkerState::Revoked).await.unwrap());
        assert!(!set_state(pool, "w-2", WorkerState::Active).await.unwrap());
        update(pool, "w-2", 160, WorkerState::Active).await.unwrap();
        assert!(current(pool).await.unwrap().is_empty());
        assert_eq!(revoked(pool).await.unwrap(), ["w-2"]);
        assert_eq!(all(pool).await.unwrap()[0].state, WorkerState::Revoked);
    }
}
