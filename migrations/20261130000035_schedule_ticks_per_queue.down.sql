-- Back to one tick per (schedule, time) across queues: keeps, for each, the
-- tick recorded first.
DELETE FROM schedule_ticks a
USING schedule_ticks b
WHERE a.schedule = b.schedule AND a.scheduled_at = b.scheduled_at
  AND (a.recorded_at, a.queue) > (b.recorded_at, b.queue);
ALTER TABLE schedule_ticks DROP CONSTRAINT schedule_ticks_pkey;
ALTER TABLE schedule_ticks ADD PRIMARY KEY (schedule, scheduled_at);
ALTER TABLE schedule_ticks DROP COLUMN queue;
