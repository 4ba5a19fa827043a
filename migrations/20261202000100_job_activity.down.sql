DROP TRIGGER IF EXISTS job_activity_update ON job_results;
DROP FUNCTION IF EXISTS janitor_count_activity();
DROP FUNCTION IF EXISTS janitor_activity_hour(timestamptz);
DROP TABLE IF EXISTS job_activity;
