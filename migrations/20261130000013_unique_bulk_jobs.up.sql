-- At most one unfinished job per operation, parameters and dry run on a
-- queue, for every operation but session cleanups (which are deduplicated
-- in Redis, at the rate of logouts). Whoever enqueues a second equal job
-- (the scheduler, the API, the CLI, a raw XADD) gets the first one back, so
-- two nightly runs never pile up.
--
-- Equal queued jobs that already exist (only possible before this index)
-- are marked skipped, keeping the newest.
UPDATE job_results AS older SET status = 'skipped', finished_at = now(),
       last_error = 'superseded by an equal queued job when unique bulk jobs were introduced'
WHERE older.status = 'queued' AND older.operation <> 'cleanup_session'
  AND EXISTS (SELECT 1 FROM job_results newer
              WHERE newer.status IN ('queued', 'running') AND newer.job_id <> older.job_id
                AND newer.queue IS NOT DISTINCT FROM older.queue AND newer.operation = older.operation
                AND newer.params = older.params AND newer.dry_run = older.dry_run
                AND (newer.status = 'running' OR newer.created_at > older.created_at));

CREATE UNIQUE INDEX job_results_one_unfinished_bulk ON job_results (queue, operation, params, dry_run)
    WHERE status IN ('queued', 'running') AND operation <> 'cleanup_session';
