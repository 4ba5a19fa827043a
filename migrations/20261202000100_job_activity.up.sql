-- Deletions and errors per hour over the last 24 hours, for the console's
-- chart, kept by a trigger so that the chart reads at most 24 x 32 small
-- rows however many jobs `job_results` holds.
--
-- A ring: the hour `h` (hours since the epoch, UTC) is kept in slot
-- `h % 24`, so the table never grows and needs no pruning. A write that
-- finds its slot holding an older hour starts the slot afresh; a reader
-- takes only the slots whose hour is one of the last 24. Each slot has up
-- to 32 rows (shards, by job id, as in `job_counters`) so that concurrent
-- batches mostly update different rows.
--
-- Like `job_counters`, a batch's deltas (NEW - OLD) are added when it
-- commits, so a long job's deletions are spread over the hours it ran in.
-- Items and bytes of dry runs are not deletions; their item errors are
-- errors. A job entering `failed` counts once.
CREATE TABLE job_activity (
    slot    smallint    NOT NULL CHECK (slot BETWEEN 0 AND 23),
    shard   smallint    NOT NULL,
    -- The start of the hour this row counts.
    hour    timestamptz NOT NULL,
    deleted bigint      NOT NULL DEFAULT 0,
    bytes   bigint      NOT NULL DEFAULT 0,
    errors  bigint      NOT NULL DEFAULT 0,
    failed  bigint      NOT NULL DEFAULT 0,
    PRIMARY KEY (slot, shard)
);

-- The start of the hour of a time, as the trigger and the reader compute it.
CREATE FUNCTION janitor_activity_hour(at timestamptz) RETURNS timestamptz
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT to_timestamp(floor(extract(epoch FROM at) / 3600) * 3600) $$;

-- Runs with the rights of the migrations' owner, as the counters' triggers
-- do: the role that writes `job_results` needs no right on this table.
CREATE FUNCTION janitor_count_activity() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    this_hour timestamptz := janitor_activity_hour(now());
    items integer := CASE WHEN NEW.dry_run THEN 0 ELSE 1 END;
BEGIN
    INSERT INTO job_activity AS a (slot, shard, hour, deleted, bytes, errors, failed)
    VALUES ((floor(extract(epoch FROM this_hour) / 3600)::bigint % 24)::smallint, janitor_job_shard(NEW.job_id), this_hour,
            items * (NEW.deleted_count - OLD.deleted_count), items * (NEW.deleted_bytes - OLD.deleted_bytes),
            NEW.error_count - OLD.error_count,
            (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed')::int)
    -- Every expression here reads the row as it was: a slot that held an
    -- older hour restarts from this delta.
    ON CONFLICT (slot, shard) DO UPDATE SET
        hour = EXCLUDED.hour,
        deleted = CASE WHEN a.hour = EXCLUDED.hour THEN a.deleted ELSE 0 END + EXCLUDED.deleted,
        bytes = CASE WHEN a.hour = EXCLUDED.hour THEN a.bytes ELSE 0 END + EXCLUDED.bytes,
        errors = CASE WHEN a.hour = EXCLUDED.hour THEN a.errors ELSE 0 END + EXCLUDED.errors,
        failed = CASE WHEN a.hour = EXCLUDED.hour THEN a.failed ELSE 0 END + EXCLUDED.failed;
    RETURN NULL;
END
$$;

-- Only updates that change what the chart counts call the function: lease
-- renewals and most of a job's other writes pass by.
CREATE TRIGGER job_activity_update AFTER UPDATE ON job_results
    FOR EACH ROW
    WHEN (OLD.deleted_count <> NEW.deleted_count OR OLD.deleted_bytes <> NEW.deleted_bytes
          OR OLD.error_count <> NEW.error_count
          OR (NEW.status = 'failed' AND OLD.status IS DISTINCT FROM 'failed'))
    EXECUTE FUNCTION janitor_count_activity();

-- The backfill: jobs that ended in the 24 hours the chart shows (this one
-- and the 23 before it), each counted whole in
-- the hour it ended (their batches' own hours are not recorded). Creating
-- the trigger above locks out writes to `job_results` until this commits,
-- so no job is counted twice or missed.
INSERT INTO job_activity (slot, shard, hour, deleted, bytes, errors, failed)
SELECT (floor(extract(epoch FROM janitor_activity_hour(finished_at)) / 3600)::bigint % 24)::smallint,
       janitor_job_shard(job_id), janitor_activity_hour(finished_at),
       coalesce(sum(deleted_count) FILTER (WHERE NOT dry_run), 0),
       coalesce(sum(deleted_bytes) FILTER (WHERE NOT dry_run), 0),
       coalesce(sum(error_count), 0), count(*) FILTER (WHERE status = 'failed')
FROM job_results
WHERE finished_at >= janitor_activity_hour(now()) - interval '23 hours' AND finished_at <= now()
GROUP BY 1, 2, 3;
