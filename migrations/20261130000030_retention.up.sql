-- no-transaction
-- The retention job (`prune_records`) deletes finished `job_results` rows
-- by age, in batches, per class: completed session jobs (kept 7 days by
-- default), other completed and skipped jobs (90 days), every other end
-- (failed, dead-lettered, cancelled: 180 days). This index leads with the
-- class (NULL for a job that has not finished) and orders each class by
-- `finished_at`, so every batch reads exactly the rows it deletes, oldest
-- first, from where the previous one ended, however many rows of the other
-- classes are kept. The expression is repeated word for word in
-- `workers/src/retention/tables.rs` (`CLASS`): queries must match it to use
-- the index (`tests/prune/batches.rs` checks that they do).
-- It is not a partial index on purpose: Postgres keeps statistics on the
-- expression of a full index only, and the planner needs them to see that a
-- class holds many rows (and so read the index in order rather than sort).
--
-- Built concurrently: `job_results` may hold millions of rows by the time
-- this runs, and workers keep writing it meanwhile.
CREATE INDEX CONCURRENTLY IF NOT EXISTS janitor_job_results_retention ON job_results (
    (CASE WHEN (status IN ('queued', 'running') OR finished_at IS NULL) THEN NULL
          WHEN status = 'completed' AND operation = 'cleanup_session' THEN 'session'
          WHEN status IN ('completed', 'skipped') THEN 'completed'
          ELSE 'failed' END),
    finished_at
);
