DROP FUNCTION IF EXISTS janitor_path_key(text);
DROP FUNCTION IF EXISTS janitor_path_key_slow(text);
