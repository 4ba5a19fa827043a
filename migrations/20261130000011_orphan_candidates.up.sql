-- The orphan sweep's candidates, between its one walk over the storage and
-- its deletions: every file that no row referred to and that was older than
-- the grace period when the walk passed it, in byte order. The walk fills it
-- (with its checkpoint, in one transaction per batch); the ratio guard
-- decides on the complete walk; the deletions read it back in order and
-- check every file again before they touch it.
--
-- Unlogged: it is a spill, not a record. Postgres empties it after a crash;
-- the sweep then sees that its checkpoint counts more candidates than the
-- table holds and walks again.
CREATE UNLOGGED TABLE janitor_orphan_candidates (
    job_id uuid   NOT NULL,
    path   text   COLLATE "C" NOT NULL,
    size   bigint NOT NULL,
    PRIMARY KEY (job_id, path)
);
