DROP TABLE IF EXISTS janitor_orphan_candidates;
