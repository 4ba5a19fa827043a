-- The worker's own table: one row per cleanup job, keyed by the job id.
--
-- The row is the job's source of truth. Producers insert it as `queued`; the
-- worker that runs the job moves it to `running`, bumps `attempts` and
-- `lease_epoch`, and then commits every batch together with the counters and
-- the checkpoint in one transaction, fenced by `lease_epoch` so that a worker
-- that lost its lease can never commit over the one that took it over.
CREATE TABLE job_results (
    job_id        uuid PRIMARY KEY,
    operation     text        NOT NULL,
    params        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    dry_run       boolean     NOT NULL DEFAULT false,
    status        text        NOT NULL DEFAULT 'queued'
                  CHECK (status IN ('queued', 'running', 'completed', 'failed')),
    deleted_count bigint      NOT NULL DEFAULT 0,
    deleted_bytes bigint      NOT NULL DEFAULT 0,
    skipped_count bigint      NOT NULL DEFAULT 0,
    error_count   bigint      NOT NULL DEFAULT 0,
    -- The first error items only (the cap is in the engine); `error_count`
    -- keeps counting past it.
    errors        jsonb       NOT NULL DEFAULT '[]'::jsonb,
    checkpoint    jsonb,
    attempts      integer     NOT NULL DEFAULT 0,
    lease_epoch   bigint      NOT NULL DEFAULT 0,
    worker        text,
    requested_by  text,
    last_error    text,
    result        jsonb,
    created_at    timestamptz NOT NULL DEFAULT now(),
    started_at    timestamptz,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    finished_at   timestamptz
);

CREATE INDEX job_results_created ON job_results (created_at DESC, job_id);
CREATE INDEX job_results_operation_created ON job_results (operation, created_at DESC);
CREATE INDEX job_results_unfinished ON job_results (status) WHERE status IN ('queued', 'running');
