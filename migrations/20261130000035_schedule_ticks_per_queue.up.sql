-- Ticks belong to a queue (the Redis key prefix, as in `job_results.queue`):
-- two deployments that share one database but not one queue each run their
-- own ticks, instead of the first to insert a tick taking it from the other.
-- A tick's job id is derived from (queue, schedule, time) in the code.
ALTER TABLE schedule_ticks ADD COLUMN queue text NOT NULL DEFAULT '';

-- Existing ticks belong to the queue of the job they recorded.
UPDATE schedule_ticks t SET queue = r.queue
FROM job_results r
WHERE r.job_id = t.job_id AND r.queue IS NOT NULL;

ALTER TABLE schedule_ticks DROP CONSTRAINT schedule_ticks_pkey;
ALTER TABLE schedule_ticks ADD PRIMARY KEY (queue, schedule, scheduled_at);
ALTER TABLE schedule_ticks ALTER COLUMN queue DROP DEFAULT;
