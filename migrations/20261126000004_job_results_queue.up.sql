-- Which queue (Redis key prefix) carries a job. NULL for jobs run in-process
-- by `janitor run`. The worker's reconciler re-enqueues only its own queue's
-- jobs, so deployments sharing a database never run each other's jobs.
ALTER TABLE job_results ADD COLUMN queue text;

CREATE INDEX job_results_queue_unfinished ON job_results (queue, updated_at)
    WHERE status IN ('queued', 'running');
