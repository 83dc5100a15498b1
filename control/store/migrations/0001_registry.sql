-- ember-control's registry. Portable SQL: the same statements run on SQLite (default) and
-- PostgreSQL. Integers are BIGINT (decoded as i64 on both), times are Unix seconds unless
-- a column holds Lambda's own timestamp text, JSON is kept as TEXT.
--
-- Names that lists are ordered and paged by (marker = the last name of a page) are
-- COLLATE "binary": byte order on both backends, whatever the database's locale. SQLite
-- has BINARY built in (collation names are case-insensitive there); on PostgreSQL,
-- Registry::open creates "binary" as a copy of the C locale's collation before migrating.
-- The columns that reference functions.name use the same collation.

CREATE TABLE accounts (
    id TEXT PRIMARY KEY,                 -- 12 digits, like an AWS account id
    name TEXT COLLATE "binary" NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE access_keys (
    key_id TEXT PRIMARY KEY,             -- AKIA… (20 characters)
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    secret TEXT NOT NULL,                -- 40 characters; the database file is 0600
    created_at BIGINT NOT NULL
);

CREATE TABLE functions (
    account_id TEXT NOT NULL REFERENCES accounts (id) ON DELETE CASCADE,
    name TEXT COLLATE "binary" NOT NULL,
    created_at BIGINT NOT NULL,
    last_version BIGINT NOT NULL DEFAULT 0,   -- highest version number ever published
    reserved_concurrency BIGINT,              -- NULL: no reservation
    PRIMARY KEY (account_id, name)
);

-- One row per version: '$LATEST' (mutable, seq 0) and published ones ('1', '2', …, seq =
-- the number, immutable once written).
CREATE TABLE versions (
    account_id TEXT NOT NULL,
    function_name TEXT COLLATE "binary" NOT NULL,
    version TEXT NOT NULL,
    seq BIGINT NOT NULL,
    description TEXT NOT NULL,
    runtime TEXT NOT NULL,
    handler TEXT NOT NULL,
    role TEXT NOT NULL,
    memory_size BIGINT NOT NULL,
    timeout BIGINT NOT NULL,
    environment TEXT NOT NULL,           -- JSON object of variables
    module_kind TEXT NOT NULL,           -- 'reactor' | 'command'
    code_sha256 TEXT NOT NULL,           -- Lambda's CodeSha256 of the uploaded ZIP
    code_size BIGINT NOT NULL,
    artifact_id TEXT NOT NULL,           -- the encrypted module in the artifact store
    last_modified TEXT NOT NULL,         -- Lambda's format: 2026-11-25T10:00:00.000+0000
    revision_id TEXT NOT NULL,
    PRIMARY KEY (account_id, function_name, version),
    FOREIGN KEY (account_id, function_name) REFERENCES functions (account_id, name) ON DELETE CASCADE
);

CREATE TABLE aliases (
    account_id TEXT NOT NULL,
    function_name TEXT COLLATE "binary" NOT NULL,
    name TEXT COLLATE "binary" NOT NULL,
    function_version TEXT NOT NULL,
    description TEXT NOT NULL,
    routing TEXT NOT NULL,               -- JSON object: additional version -> weight
    revision_id TEXT NOT NULL,
    PRIMARY KEY (account_id, function_name, name),
    FOREIGN KEY (account_id, function_name) REFERENCES functions (account_id, name) ON DELETE CASCADE
);

CREATE TABLE provisioned_concurrency (
    account_id TEXT NOT NULL,
    function_name TEXT COLLATE "binary" NOT NULL,
    qualifier TEXT COLLATE "binary" NOT NULL, -- a published version or an alias
    requested BIGINT NOT NULL,
    last_modified TEXT NOT NULL,
    PRIMARY KEY (account_id, function_name, qualifier),
    FOREIGN KEY (account_id, function_name) REFERENCES functions (account_id, name) ON DELETE CASCADE
);
