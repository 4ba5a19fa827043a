-- Scheduled runs. A job may now also end as `skipped`: a scheduled tick that
-- was missed beyond the catch-up window, or that came while the previous run
-- of the same operation was still going. `last_error` then holds the reason.
ALTER TABLE job_results DROP CONSTRAINT job_results_status_check;
ALTER TABLE job_results ADD CONSTRAINT job_results_status_check
    CHECK (status IN ('queued', 'running', 'completed', 'failed', 'skipped'));

-- One row per tick of a schedule. The primary key is what makes a tick run
-- exactly once however many schedulers fire it: only the scheduler whose
-- insert succeeds enqueues, and it inserts the job's `job_results` row in the
-- same transaction (so a scheduler dying right after still leaves a queued
-- job that the reconciler enqueues).
CREATE TABLE schedule_ticks (
    schedule     text        NOT NULL,
    scheduled_at timestamptz NOT NULL,
    job_id       uuid        NOT NULL UNIQUE,
    -- enqueued | skipped
    outcome      text        NOT NULL CHECK (outcome IN ('enqueued', 'skipped')),
    reason       text,
    recorded_by  text,
    recorded_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (schedule, scheduled_at)
);
