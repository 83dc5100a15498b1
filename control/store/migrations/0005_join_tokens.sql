-- Join tokens: what a new worker presents to register. Each is the operator's to create,
-- limit and revoke (`ember worker token create|list`, `ember worker revoke`): it may expire,
-- may be used a bounded number of times, and caps the capacity a worker joining with it
-- may claim. Only a SHA-256 of the token's secret is kept. Portable SQL, as in 0001.

CREATE TABLE join_tokens (
    id TEXT PRIMARY KEY,                 -- jt- and 8 hex digits, or 'bootstrap' (DIR/worker-token)
    secret_sha256 TEXT NOT NULL,         -- hex
    description TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT,                   -- NULL: never
    max_uses BIGINT,                     -- NULL: any number of registrations
    uses BIGINT NOT NULL,
    max_vcpus BIGINT NOT NULL,
    max_memory_mib BIGINT NOT NULL,
    max_environments BIGINT NOT NULL,
    revoked_at BIGINT                    -- NULL: not revoked
);

-- Which token a worker joined with ('' for workers that registered before tokens had ids);
-- a worker's state may now also be 'revoked'.
ALTER TABLE workers ADD COLUMN token_id TEXT NOT NULL DEFAULT '';
