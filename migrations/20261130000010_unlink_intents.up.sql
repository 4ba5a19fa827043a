-- Files whose image rows a batch has deleted, and that are still to be
-- unlinked. A row batch deletes its rows and inserts this record in one
-- transaction, commits, and only then unlinks the files; the next batch's
-- transaction deletes the record once the unlinks are done. So a crash, a
-- lost connection or a paused worker can at worst leave files that no row
-- references (the rerun, or the orphan sweep, removes them), never a row
-- whose file is gone.
CREATE TABLE janitor_unlink_intents (
    job_id     uuid        NOT NULL,
    batch      bigint      NOT NULL,
    image_ids  bigint[]    NOT NULL,
    paths      text[]      NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (job_id, batch)
);
