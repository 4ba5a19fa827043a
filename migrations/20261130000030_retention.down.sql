DROP INDEX IF EXISTS janitor_job_results_retention;
