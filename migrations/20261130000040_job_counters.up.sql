-- Job counters kept incrementally, so that `/metrics` reads a few dozen
-- small rows instead of aggregating `job_results` on every scrape.
--
-- Triggers on `job_results` add each row change's effect to `job_counters`
-- in the same transaction as the change: a row inserted is a job enqueued;
-- `started_at` going from NULL to set is a start; `status` entering
-- completed, failed, skipped or cancelled counts once per entry (a job that
-- failed and then completed on retry counts both); the item counters,
-- `greatest(attempts - 1, 0)` (extra deliveries) and the batch histogram of
-- the checkpoint add their delta NEW - OLD. Rows are rewritten after every
-- batch with cumulative totals, and a retry resumes from its checkpoint's
-- totals, so adding deltas counts every item exactly once. Deleting a row
-- (retention, `janitor prune`) changes nothing: the counters are monotonic,
-- as Prometheus counters must be.
--
-- Contention: hundreds of session jobs may end per second, each in its own
-- transaction. With one row per operation they would all queue behind that
-- row's lock until each committed. So each operation has up to 32 rows
-- (shards), chosen by the job id: concurrent jobs mostly update different
-- rows, and a scrape sums the shards.
CREATE TABLE job_counters (
    operation            text     NOT NULL,
    shard                smallint NOT NULL,
    enqueued             bigint   NOT NULL DEFAULT 0,
    started              bigint   NOT NULL DEFAULT 0,
    completed            bigint   NOT NULL DEFAULT 0,
    failed               bigint   NOT NULL DEFAULT 0,
    skipped              bigint   NOT NULL DEFAULT 0,
    cancelled            bigint   NOT NULL DEFAULT 0,
    -- Items and bytes of runs that were not dry runs.
    items_deleted        bigint   NOT NULL DEFAULT 0,
    bytes_freed          bigint   NOT NULL DEFAULT 0,
    items_skipped_in_use bigint   NOT NULL DEFAULT 0,
    item_errors          bigint   NOT NULL DEFAULT 0,
    rescued              bigint   NOT NULL DEFAULT 0,
    -- Batch durations: the count per bucket of `progress::BATCH_BUCKETS`
    -- (the last is +Inf), not cumulative, and the sum of the seconds.
    batch_buckets        bigint[] NOT NULL DEFAULT '{}',
    batch_seconds_sum    float8   NOT NULL DEFAULT 0,
    -- Jobs in status `running` now: a gauge, +1 when a row enters
    -- `running`, -1 when it leaves it.
    running              bigint   NOT NULL DEFAULT 0,
    -- Job durations, from `started_at` to `finished_at`, counted when a job
    -- ends (completed, failed or cancelled): the count per bucket of
    -- `janitor_duration_counts` (the last is +Inf), and the seconds' sum.
    duration_buckets     bigint[] NOT NULL DEFAULT '{}',
    duration_seconds_sum float8   NOT NULL DEFAULT 0,
    PRIMARY KEY (operation, shard)
);

-- Each schedule's last completed run, kept by the same trigger, so that
-- `janitor_schedule_last_success_age_seconds` needs no join on `job_results`
-- (and survives the pruning of old ticks and rows).
CREATE TABLE schedule_last_success (
    -- The queue (Redis prefix) the schedule ticks on, as in `schedule_ticks`.
    queue       text        NOT NULL,
    schedule    text        NOT NULL,
    finished_at timestamptz NOT NULL,
    PRIMARY KEY (queue, schedule)
);

CREATE FUNCTION janitor_job_shard(job_id uuid) RETURNS smallint
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT (get_byte(uuid_send(job_id), 15) % 32)::smallint $$;

-- Element-wise sum of two count arrays (the shorter is padded with zeros).
CREATE FUNCTION janitor_add_counts(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
          FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) $$;

CREATE AGGREGATE janitor_sum_counts(bigint[]) (SFUNC = janitor_add_counts, STYPE = bigint[], INITCOND = '{}');

-- A one-job histogram of a job's duration: 1 in the first bucket whose
-- upper bound (seconds) is at least `seconds`, the last being +Inf. The
-- bounds are `JOB_DURATION_BUCKETS` in src/http/metrics.rs.
CREATE FUNCTION janitor_duration_counts(seconds float8) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ WITH bounds(b) AS (SELECT '{0.1,0.5,1,2.5,5,10,30,60,120,300,900,1800,3600,21600}'::float8[]),
               fits(n) AS (SELECT coalesce((SELECT min(n) FROM unnest(b) WITH ORDINALITY AS u(bound, n)
                                            WHERE seconds <= bound), cardinality(b) + 1) FROM bounds)
          SELECT array_agg((i = n)::int::bigint ORDER BY i)
          FROM fits, bounds, generate_series(1, cardinality(b) + 1) AS i $$;

-- A checkpoint's batch histogram (`batch_seconds`), '{}' if it has none.
CREATE FUNCTION janitor_batch_counts(checkpoint jsonb) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_agg(v::bigint ORDER BY i), '{}')
          FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(checkpoint->'batch_seconds') = 'array'
                                              THEN checkpoint->'batch_seconds' ELSE '[]' END)
               WITH ORDINALITY AS t(v, i) $$;

-- Inserted rows, counted per statement: a producer inserts up to a thousand
-- jobs in one statement, and taking their shard rows in one sorted upsert
-- keeps two such statements from deadlocking on each other.
-- Both counting functions run with the rights of the migrations' owner
-- (SECURITY DEFINER, with the search path fixed at creation): the role that
-- writes `job_results` needs no right to write the counters, so it cannot
-- set them to anything but what its job rows did.
CREATE FUNCTION janitor_count_inserted_jobs() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO job_counters AS c
    SELECT operation, janitor_job_shard(job_id), count(*), count(started_at),
           count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
           count(*) FILTER (WHERE status = 'skipped'), count(*) FILTER (WHERE status = 'cancelled'),
           coalesce(sum(deleted_count) FILTER (WHERE NOT dry_run), 0),
           coalesce(sum(deleted_bytes) FILTER (WHERE NOT dry_run), 0),
           coalesce(sum(skipped_count), 0), coalesce(sum(error_count), 0),
           coalesce(sum(greatest(attempts - 1, 0)), 0),
           janitor_sum_counts(janitor_batch_counts(checkpoint)),
           coalesce(sum((checkpoint->>'batch_seconds_sum')::float8), 0),
           count(*) FILTER (WHERE status = 'running'),
           coalesce(janitor_sum_counts(janitor_duration_counts(extract(epoch FROM finished_at - started_at)::float8))
                        FILTER (WHERE status IN ('completed', 'failed', 'cancelled')
                                  AND started_at IS NOT NULL AND finished_at IS NOT NULL), '{}'),
           coalesce(sum(extract(epoch FROM finished_at - started_at)::float8)
                        FILTER (WHERE status IN ('completed', 'failed', 'cancelled')), 0)
    FROM inserted GROUP BY 1, 2 ORDER BY 1, 2
    ON CONFLICT (operation, shard) DO UPDATE SET
        enqueued = c.enqueued + EXCLUDED.enqueued, started = c.started + EXCLUDED.started,
        completed = c.completed + EXCLUDED.completed, failed = c.failed + EXCLUDED.failed,
        skipped = c.skipped + EXCLUDED.skipped, cancelled = c.cancelled + EXCLUDED.cancelled,
        items_deleted = c.items_deleted + EXCLUDED.items_deleted, bytes_freed = c.bytes_freed + EXCLUDED.bytes_freed,
        items_skipped_in_use = c.items_skipped_in_use + EXCLUDED.items_skipped_in_use,
        item_errors = c.item_errors + EXCLUDED.item_errors, rescued = c.rescued + EXCLUDED.rescued,
        batch_buckets = janitor_add_counts(c.batch_buckets, EXCLUDED.batch_buckets),
        batch_seconds_sum = c.batch_seconds_sum + EXCLUDED.batch_seconds_sum,
        running = c.running + EXCLUDED.running,
        duration_buckets = janitor_add_counts(c.duration_buckets, EXCLUDED.duration_buckets),
        duration_seconds_sum = c.duration_seconds_sum + EXCLUDED.duration_seconds_sum;
    RETURN NULL;
END
$$;

-- An updated row, counted per row: the trigger's WHEN clause lets lease
-- renewals and other updates that change no counter through without it.
-- Updates of one row are what runs at volume (start, each batch, the end);
-- a statement that changes many rows' counters at once takes their shard
-- rows in row order.
CREATE FUNCTION janitor_count_updated_job() RETURNS trigger LANGUAGE plpgsql
    SECURITY DEFINER SET search_path FROM CURRENT AS $$
DECLARE
    -- The status the row entered, '' if it kept its status.
    entered text := CASE WHEN NEW.status IS DISTINCT FROM OLD.status THEN NEW.status ELSE '' END;
    items integer := CASE WHEN NEW.dry_run THEN 0 ELSE 1 END;
    buckets bigint[] := '{}';
    seconds float8 := 0;
    took float8 := CASE WHEN NEW.status IS DISTINCT FROM OLD.status
                             AND NEW.status IN ('completed', 'failed', 'cancelled') AND NEW.started_at IS NOT NULL
                        THEN extract(epoch FROM coalesce(NEW.finished_at, now()) - NEW.started_at)::float8 END;
BEGIN
    IF NEW.checkpoint IS DISTINCT FROM OLD.checkpoint THEN
        buckets := janitor_add_counts(janitor_batch_counts(NEW.checkpoint),
                                      (SELECT coalesce(array_agg(-n), '{}') FROM unnest(janitor_batch_counts(OLD.checkpoint)) AS n));
        seconds := coalesce((NEW.checkpoint->>'batch_seconds_sum')::float8, 0)
                 - coalesce((OLD.checkpoint->>'batch_seconds_sum')::float8, 0);
    END IF;
    INSERT INTO job_counters AS c
    VALUES (NEW.operation, janitor_job_shard(NEW.job_id), 0,
            (OLD.started_at IS NULL AND NEW.started_at IS NOT NULL)::int,
            (entered = 'completed')::int, (entered = 'failed')::int,
            (entered = 'skipped')::int, (entered = 'cancelled')::int,
            items * (NEW.deleted_count - OLD.deleted_count), items * (NEW.deleted_bytes - OLD.deleted_bytes),
            NEW.skipped_count - OLD.skipped_count, NEW.error_count - OLD.error_count,
            greatest(NEW.attempts - 1, 0) - greatest(OLD.attempts - 1, 0),
            buckets, seconds,
            (NEW.status = 'running')::int - (OLD.status = 'running')::int,
            CASE WHEN took IS NULL THEN '{}' ELSE janitor_duration_counts(took) END, coalesce(took, 0))
    ON CONFLICT (operation, shard) DO UPDATE SET
        started = c.started + EXCLUDED.started,
        completed = c.completed + EXCLUDED.completed, failed = c.failed + EXCLUDED.failed,
        skipped = c.skipped + EXCLUDED.skipped, cancelled = c.cancelled + EXCLUDED.cancelled,
        items_deleted = c.items_deleted + EXCLUDED.items_deleted, bytes_freed = c.bytes_freed + EXCLUDED.bytes_freed,
        items_skipped_in_use = c.items_skipped_in_use + EXCLUDED.items_skipped_in_use,
        item_errors = c.item_errors + EXCLUDED.item_errors, rescued = c.rescued + EXCLUDED.rescued,
        batch_buckets = janitor_add_counts(c.batch_buckets, EXCLUDED.batch_buckets),
        batch_seconds_sum = c.batch_seconds_sum + EXCLUDED.batch_seconds_sum,
        running = c.running + EXCLUDED.running,
        duration_buckets = janitor_add_counts(c.duration_buckets, EXCLUDED.duration_buckets),
        duration_seconds_sum = c.duration_seconds_sum + EXCLUDED.duration_seconds_sum;
    -- A scheduled job's tick row is written with its queued row, long before
    -- it completes.
    IF entered = 'completed' THEN
        INSERT INTO schedule_last_success AS s
        SELECT queue, schedule, coalesce(NEW.finished_at, now()) FROM schedule_ticks WHERE job_id = NEW.job_id
        ON CONFLICT (queue, schedule) DO UPDATE SET finished_at = greatest(s.finished_at, EXCLUDED.finished_at);
    END IF;
    RETURN NULL;
END
$$;

-- No other write can slip between the backfill and the triggers: creating
-- a trigger locks out writes to `job_results` until this migration commits
-- (about a second per million rows for the backfill below).
CREATE TRIGGER job_counters_insert AFTER INSERT ON job_results
    REFERENCING NEW TABLE AS inserted
    FOR EACH STATEMENT EXECUTE FUNCTION janitor_count_inserted_jobs();

CREATE TRIGGER job_counters_update AFTER UPDATE ON job_results
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR (OLD.started_at IS NULL AND NEW.started_at IS NOT NULL)
          OR OLD.deleted_count <> NEW.deleted_count OR OLD.deleted_bytes <> NEW.deleted_bytes
          OR OLD.skipped_count <> NEW.skipped_count OR OLD.error_count <> NEW.error_count
          OR OLD.attempts <> NEW.attempts OR OLD.checkpoint IS DISTINCT FROM NEW.checkpoint)
    EXECUTE FUNCTION janitor_count_updated_job();

-- The backfill: what the rows there now have done, as the scrape used to
-- count it (a row counts one start if it has `started_at`, one end for its
-- present status).
INSERT INTO job_counters
SELECT operation, janitor_job_shard(job_id), count(*), count(started_at),
       count(*) FILTER (WHERE status = 'completed'), count(*) FILTER (WHERE status = 'failed'),
       count(*) FILTER (WHERE status = 'skipped'), count(*) FILTER (WHERE status = 'cancelled'),
       coalesce(sum(deleted_count) FILTER (WHERE NOT dry_run), 0),
       coalesce(sum(deleted_bytes) FILTER (WHERE NOT dry_run), 0),
       coalesce(sum(skipped_count), 0), coalesce(sum(error_count), 0),
       coalesce(sum(greatest(attempts - 1, 0)), 0),
       janitor_sum_counts(janitor_batch_counts(checkpoint)),
       coalesce(sum((checkpoint->>'batch_seconds_sum')::float8), 0),
       count(*) FILTER (WHERE status = 'running'),
       coalesce(janitor_sum_counts(janitor_duration_counts(extract(epoch FROM finished_at - started_at)::float8))
                    FILTER (WHERE status IN ('completed', 'failed', 'cancelled')
                              AND started_at IS NOT NULL AND finished_at IS NOT NULL), '{}'),
       coalesce(sum(extract(epoch FROM finished_at - started_at)::float8)
                    FILTER (WHERE status IN ('completed', 'failed', 'cancelled')), 0)
FROM job_results GROUP BY 1, 2;

INSERT INTO schedule_last_success
SELECT t.queue, t.schedule, max(r.finished_at)
FROM schedule_ticks t JOIN job_results r ON r.job_id = t.job_id
WHERE r.status = 'completed' AND r.finished_at IS NOT NULL
GROUP BY t.queue, t.schedule;
