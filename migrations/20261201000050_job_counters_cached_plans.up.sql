-- The counter triggers of 20261130000040, at a fraction of their cost.
--
-- Postgres plans a `LANGUAGE sql` function that it cannot inline (these
-- three have a FROM clause) again on every call: a job's start, each batch
-- and its end each parsed and planned about six small queries in the
-- trigger, a third of Postgres's CPU in a run of session jobs. These
-- PL/pgSQL bodies are plain expressions and loops, which PL/pgSQL evaluates
-- without starting a query, and they return what the queries returned.

-- Element-wise sum of two count arrays (the shorter is padded with zeros).
CREATE OR REPLACE FUNCTION janitor_add_counts(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    sum bigint[] := '{}';
    -- Whatever an array's lower bound, its elements are taken in order.
    a0 integer := coalesce(array_lower(a, 1), 1) - 1;
    b0 integer := coalesce(array_lower(b, 1), 1) - 1;
BEGIN
    FOR i IN 1 .. greatest(coalesce(cardinality(a), 0), coalesce(cardinality(b), 0)) LOOP
        sum[i] := coalesce(a[a0 + i], 0) + coalesce(b[b0 + i], 0);
    END LOOP;
    RETURN sum;
END
$$;

-- A one-job histogram of a job's duration: 1 in the first bucket whose
-- upper bound (seconds) is at least `seconds`, the last being +Inf. The
-- bounds are `JOB_DURATION_BUCKETS` in src/http/metrics.rs.
CREATE OR REPLACE FUNCTION janitor_duration_counts(seconds float8) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
DECLARE
    bounds float8[] := '{0.1,0.5,1,2.5,5,10,30,60,120,300,900,1800,3600,21600}';
    counts bigint[] := array_fill(0::bigint, ARRAY[cardinality(bounds) + 1]);
    bucket integer := cardinality(bounds) + 1;
BEGIN
    FOR i IN 1 .. cardinality(bounds) LOOP
        IF seconds <= bounds[i] THEN
            bucket := i;
            EXIT;
        END IF;
    END LOOP;
    counts[bucket] := 1;
    RETURN counts;
END
$$;

-- A checkpoint's batch histogram (`batch_seconds`, a JSON array of
-- integers), '{}' if it has none.
CREATE OR REPLACE FUNCTION janitor_batch_counts(checkpoint jsonb) RETURNS bigint[]
    LANGUAGE plpgsql IMMUTABLE PARALLEL SAFE AS $$
BEGIN
    IF jsonb_typeof(checkpoint->'batch_seconds') IS DISTINCT FROM 'array' THEN
        RETURN '{}';
    END IF;
    -- '[1, 0, 2]' becomes '{1, 0, 2}'.
    RETURN translate((checkpoint->'batch_seconds')::text, '[]', '{}')::bigint[];
END
$$;

-- The update trigger also skips the histogram arithmetic when the update
-- does not change it: most checkpoint writes move the cursor or settle
-- unlinks, and no write of a job's status or counters touches the
-- job-duration histogram until the job ends.
CREATE OR REPLACE FUNCTION janitor_count_updated_job() RETURNS trigger LANGUAGE plpgsql
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
    durations bigint[] := CASE WHEN took IS NULL THEN '{}' ELSE janitor_duration_counts(took) END;
BEGIN
    IF NEW.checkpoint->'batch_seconds' IS DISTINCT FROM OLD.checkpoint->'batch_seconds' THEN
        -- The new histogram minus the old one.
        buckets := janitor_batch_counts(OLD.checkpoint);
        FOR i IN 1 .. coalesce(cardinality(buckets), 0) LOOP
            buckets[i] := -buckets[i];
        END LOOP;
        buckets := janitor_add_counts(janitor_batch_counts(NEW.checkpoint), buckets);
    END IF;
    IF NEW.checkpoint IS DISTINCT FROM OLD.checkpoint THEN
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
            durations, coalesce(took, 0))
    ON CONFLICT (operation, shard) DO UPDATE SET
        started = c.started + EXCLUDED.started,
        completed = c.completed + EXCLUDED.completed, failed = c.failed + EXCLUDED.failed,
        skipped = c.skipped + EXCLUDED.skipped, cancelled = c.cancelled + EXCLUDED.cancelled,
        items_deleted = c.items_deleted + EXCLUDED.items_deleted, bytes_freed = c.bytes_freed + EXCLUDED.bytes_freed,
        items_skipped_in_use = c.items_skipped_in_use + EXCLUDED.items_skipped_in_use,
        item_errors = c.item_errors + EXCLUDED.item_errors, rescued = c.rescued + EXCLUDED.rescued,
        -- Adding an empty histogram changes nothing: skip the call.
        batch_buckets = CASE WHEN cardinality(EXCLUDED.batch_buckets) = 0 THEN c.batch_buckets
                             ELSE janitor_add_counts(c.batch_buckets, EXCLUDED.batch_buckets) END,
        batch_seconds_sum = c.batch_seconds_sum + EXCLUDED.batch_seconds_sum,
        running = c.running + EXCLUDED.running,
        duration_buckets = CASE WHEN cardinality(EXCLUDED.duration_buckets) = 0 THEN c.duration_buckets
                                ELSE janitor_add_counts(c.duration_buckets, EXCLUDED.duration_buckets) END,
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
