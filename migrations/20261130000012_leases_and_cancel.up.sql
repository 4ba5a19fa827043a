-- Leases in Postgres, and cancellation.
--
-- A job is `running` only while its lease is fresh: the worker that holds
-- it renews `lease_expires_at` while it runs, in every phase. The
-- reconciler re-enqueues (or fails, after its attempts) a running job whose
-- lease has expired and that no stream entry carries; the overlap check of
-- the scheduler and the dedup of equal jobs count only live leases.
--
-- `cancel_requested_at`: an operator asked to cancel the job. A queued job
-- is cancelled at once; a running one stops at its next batch boundary and
-- ends as `cancelled`, with its counts and checkpoint kept (it can be
-- retried under the same id).
ALTER TABLE job_results ADD COLUMN lease_expires_at timestamptz;
ALTER TABLE job_results ADD COLUMN cancel_requested_at timestamptz;
UPDATE job_results SET lease_expires_at = updated_at + interval '30 seconds' WHERE status = 'running';

ALTER TABLE job_results DROP CONSTRAINT job_results_status_check;
ALTER TABLE job_results ADD CONSTRAINT job_results_status_check
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'skipped', 'cancelled'));

-- The reconciler's look for running jobs whose lease has expired.
CREATE INDEX job_results_running_lease ON job_results (queue, lease_expires_at) WHERE status = 'running';
