DROP TABLE IF EXISTS janitor_unlink_intents;
