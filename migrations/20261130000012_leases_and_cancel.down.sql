DROP INDEX IF EXISTS job_results_running_lease;
UPDATE job_results SET status = 'failed' WHERE status = 'cancelled';
ALTER TABLE job_results DROP CONSTRAINT job_results_status_check;
ALTER TABLE job_results ADD CONSTRAINT job_results_status_check
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'skipped'));
ALTER TABLE job_results DROP COLUMN cancel_requested_at;
ALTER TABLE job_results DROP COLUMN lease_expires_at;
