-- Asynchronous (`Event`) invocations: each is committed here before the caller gets its
-- 202, runs from here, and keeps its outcome for a day. Portable SQL, as in 0001: BIGINT
-- integers, TEXT states; times are Unix milliseconds (retry delays are shorter than a
-- second in tests). No foreign key to functions: an event for a function deleted meanwhile
-- must stay to be recorded as dropped.

CREATE TABLE events (
    id TEXT PRIMARY KEY,                 -- the request id the caller got (x-amzn-RequestId)
    account_id TEXT NOT NULL,
    function_name TEXT COLLATE "binary" NOT NULL,
    qualifier TEXT,                      -- as given (a version or an alias); NULL: $LATEST
    payload TEXT NOT NULL,               -- base64 of the event
    state TEXT NOT NULL,                 -- 'pending' | 'running' | 'succeeded' | 'failed' | 'expired' | 'dropped'
    attempts BIGINT NOT NULL DEFAULT 0,  -- runs that reached a worker or failed on it
    deferrals BIGINT NOT NULL DEFAULT 0, -- times put back for a throttle or no worker
    enqueued_at_ms BIGINT NOT NULL,
    run_at_ms BIGINT NOT NULL,           -- pending: not before; running: the claim's end
    finished_at_ms BIGINT,
    last_error TEXT                      -- why the last attempt did not succeed
);

-- The executor's questions: which pending events are due, which claims ran out, and which
-- finished events are old enough to prune.
CREATE INDEX events_due ON events (state, run_at_ms);
CREATE INDEX events_finished ON events (finished_at_ms);
