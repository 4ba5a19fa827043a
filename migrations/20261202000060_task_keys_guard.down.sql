DROP FUNCTION IF EXISTS janitor_require_task_keys();
DROP FUNCTION IF EXISTS janitor_task_keys_problem();
