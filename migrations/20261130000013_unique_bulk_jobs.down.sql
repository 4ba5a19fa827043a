DROP INDEX IF EXISTS job_results_one_unfinished_bulk;
