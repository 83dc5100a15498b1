-- Function logs, as Lambda writes them to CloudWatch Logs: one row per line (event) of a
-- function's log group /aws/lambda/{function_name}. Portable SQL, as in 0001. Rows are
-- pruned by age (the retention setting) and by a cap per function; a deleted function's
-- logs stay until then, as CloudWatch keeps them.
--
-- Events sort by (timestamp_ms, writer, seq): the writing control instance's random id and
-- its own counter keep the lines of one invocation in order and make paging exact even
-- when several instances write at the same millisecond.

CREATE TABLE log_events (
    account_id TEXT NOT NULL,
    function_name TEXT COLLATE "binary" NOT NULL,
    log_stream TEXT COLLATE "binary" NOT NULL,   -- YYYY/MM/DD/[VERSION]{worker}-{environment}
    timestamp_ms BIGINT NOT NULL,                -- the event's time, Unix ms
    writer TEXT COLLATE "binary" NOT NULL,       -- hex id of the control instance that wrote it
    seq BIGINT NOT NULL,                         -- that instance's ingestion order
    ingestion_ms BIGINT NOT NULL,                -- when it was stored, Unix ms
    message TEXT NOT NULL,
    PRIMARY KEY (account_id, function_name, timestamp_ms, writer, seq)
);

CREATE INDEX log_events_by_stream
    ON log_events (account_id, function_name, log_stream, timestamp_ms, writer, seq);

-- Retention deletes by age across all functions.
CREATE INDEX log_events_by_time ON log_events (timestamp_ms);
