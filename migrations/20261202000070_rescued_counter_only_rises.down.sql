-- The function of 20261201000050.
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
