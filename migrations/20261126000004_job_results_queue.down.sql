DROP INDEX IF EXISTS job_results_queue_unfinished;
ALTER TABLE job_results DROP COLUMN IF EXISTS queue;
