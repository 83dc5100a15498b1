-- The event queue takes turns by account (issue 11 item 7): due events are numbered per
-- account, oldest first, and running ones counted per account. Portable SQL, as in 0001.

CREATE INDEX events_by_account ON events (state, account_id, run_at_ms, id);
