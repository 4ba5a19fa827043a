-- The jobs list (`results::list`: the console's `/jobs` and the API's
-- `GET /jobs`) filters by operation, status and requested_by, newest first,
-- in keyset pages of (created_at, job_id). Without an index that leads with
-- the filter, a filter that matches few rows walks the whole history to
-- fill a page: on 1,000,000 rows, `requested_by` of a name that asked for
-- nothing took a parallel sequential scan of 120 ms, and 270 ms once the
-- statement had a generic plan.
--
-- One index per filter, each in the list's order, so a filtered page reads
-- its 50 rows and stops, on any page. Each carries the two other filter
-- columns (INCLUDE): a page with several filters is an index-only scan of
-- the narrowest filter's entries, checking the others without reading the
-- table (a combination that matches nothing among 60,000 entries: 280 ms
-- through the table, 21 ms without it).
--
-- Every index costs each job insert and update, so two go that these make
-- redundant: `job_results_operation_created` (this one's prefix, without
-- the job id that orders a page's ties) and `job_results_created` (the same
-- columns as `job_results_created_desc`, with the job id ascending, which
-- no query asks for). One index more in all: a simulated session job's
-- four writes made 8% more WAL (11.0 kB against 10.2 kB), with no loss of
-- throughput (docs/PERFORMANCE.md, "Console pages at a million jobs").
--
-- Built in this migration's transaction, which holds off writes to
-- `job_results` while it runs (10 to 12 s for the three at a million rows
-- on a 2-core machine). On a large table, build them beforehand with
-- `CREATE INDEX CONCURRENTLY` and these same definitions (see OPERATIONS,
-- "Console"): the migration then finds them and skips them. A concurrent
-- build that failed leaves an invalid index of the same name, which
-- `IF NOT EXISTS` would take for a built one: such an index is dropped and
-- built here.
DO $$
DECLARE
    broken regclass;
BEGIN
    FOR broken IN
        SELECT i.indexrelid::regclass FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        WHERE i.indrelid = 'job_results'::regclass AND NOT i.indisvalid
          AND c.relname IN ('job_results_list_operation', 'job_results_list_status', 'job_results_list_requested_by')
    LOOP
        EXECUTE format('DROP INDEX %s', broken);
    END LOOP;
END
$$;

CREATE INDEX IF NOT EXISTS job_results_list_operation
    ON job_results (operation, created_at DESC, job_id DESC) INCLUDE (status, requested_by);
CREATE INDEX IF NOT EXISTS job_results_list_status
    ON job_results (status, created_at DESC, job_id DESC) INCLUDE (operation, requested_by);
CREATE INDEX IF NOT EXISTS job_results_list_requested_by
    ON job_results (requested_by, created_at DESC, job_id DESC) INCLUDE (operation, status);

DROP INDEX IF EXISTS job_results_operation_created;
DROP INDEX IF EXISTS job_results_created;
