CREATE INDEX IF NOT EXISTS job_results_created ON job_results (created_at DESC, job_id);
CREATE INDEX IF NOT EXISTS job_results_operation_created ON job_results (operation, created_at DESC);
DROP INDEX IF EXISTS job_results_list_requested_by;
DROP INDEX IF EXISTS job_results_list_status;
DROP INDEX IF EXISTS job_results_list_operation;
