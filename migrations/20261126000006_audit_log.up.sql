-- Every admin API request, accepted or refused: who, what, with which
-- parameters, the outcome and the job it created. `janitor audit` reads it.
CREATE TABLE audit_log (
    id       bigserial PRIMARY KEY,
    at       timestamptz NOT NULL DEFAULT now(),
    -- The token's name; NULL when no valid token was presented.
    actor    text,
    method   text        NOT NULL,
    path     text        NOT NULL,
    params   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    status   integer     NOT NULL,
    -- accepted | unauthorized | invalid | rate_limited | not_found | error
    outcome  text        NOT NULL,
    job_id   uuid,
    remote   text,
    detail   text
);

CREATE INDEX audit_log_at ON audit_log (at DESC);

-- Keyset paging of recent jobs: (created_at, job_id) descending.
CREATE INDEX job_results_created_desc ON job_results (created_at DESC, job_id DESC);

-- The queue entry a running job was started from. A second entry of the
-- same job (a duplicate enqueue) must not take over from a live holder; a
-- rescue of the same entry, or any entry once the holder went quiet, may.
ALTER TABLE job_results ADD COLUMN entry_id text;
