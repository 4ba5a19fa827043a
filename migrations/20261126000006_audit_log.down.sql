DROP TABLE IF EXISTS audit_log;
DROP INDEX IF EXISTS job_results_created_desc;
ALTER TABLE job_results DROP COLUMN IF EXISTS entry_id;
