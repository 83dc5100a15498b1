-- The worker fleet: one row per registration, kept so a control restart (or another
-- instance on the same database) knows its workers. Portable SQL, as in 0001: BIGINT
-- integers, Unix seconds, TEXT states.

CREATE TABLE workers (
    id TEXT PRIMARY KEY,                 -- w- and 16 hex digits; the certificate's common name
    name TEXT NOT NULL,                  -- the worker's own name (host name), for people
    address TEXT NOT NULL,               -- host:port of its worker API
    vcpus BIGINT NOT NULL,
    memory_mib BIGINT NOT NULL,
    max_environments BIGINT NOT NULL,
    registered_at BIGINT NOT NULL,
    last_heartbeat BIGINT NOT NULL,
    lease_expires_at BIGINT NOT NULL,
    state TEXT NOT NULL                  -- 'active' | 'draining' | 'dead' | 'gone'
);
