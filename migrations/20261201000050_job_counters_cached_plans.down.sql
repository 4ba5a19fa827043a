-- The definitions of 20261130000040.
CREATE OR REPLACE FUNCTION janitor_add_counts(a bigint[], b bigint[]) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
          FROM unnest(a, b) WITH ORDINALITY AS t(x, y, i) $$;

CREATE OR REPLACE FUNCTION janitor_duration_counts(seconds float8) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ WITH bounds(b) AS (SELECT '{0.1,0.5,1,2.5,5,10,30,60,120,300,900,1800,3600,21600}'::float8[]),
               fits(n) AS (SELECT coalesce((SELECT min(n) FROM unnest(b) WITH ORDINALITY AS u(bound, n)
                                            WHERE seconds <= bound), cardinality(b) + 1) FROM bounds)
          SELECT array_agg((i = n)::int::bigint ORDER BY i)
          FROM fits, bounds, generate_series(1, cardinality(b) + 1) AS i $$;

CREATE OR REPLACE FUNCTION janitor_batch_counts(checkpoint jsonb) RETURNS bigint[]
    LANGUAGE sql IMMUTABLE PARALLEL SAFE
    AS $$ SELECT coalesce(array_agg(v::bigint ORDER BY i), '{}')
          FROM jsonb_array_elements_text(CASE WHEN jsonb_typeof(checkpoint->'batch_seconds') = 'array'
                                              THEN checkpoint->'batch_seconds' ELSE '[]' END)
               WITH ORDINALITY AS t(v, i) $$;

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
