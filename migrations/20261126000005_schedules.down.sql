DROP TABLE IF EXISTS schedule_ticks;
DELETE FROM job_results WHERE status = 'skipped';
ALTER TABLE job_results DROP CONSTRAINT job_results_status_check;
ALTER TABLE job_results ADD CONSTRAINT job_results_status_check
    CHECK (status IN ('queued', 'running', 'completed', 'failed'));
