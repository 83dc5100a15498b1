-- Each account's concurrency limit (issue 11 item 7): the invocations it may have in flight
-- across the fleet, its functions' reservations carved out of it. NULL: the default
-- (ACCOUNT_CONCURRENCY_LIMIT in concurrency.rs, 1000, Lambda's). The operator sets it with
-- `ember-control account set-concurrency`. Portable SQL, as in 0001.

ALTER TABLE accounts ADD COLUMN concurrency_limit BIGINT;
