//! The engine's own working tables, whose rows outlive their job only when
//! it ended badly: `janitor_unlink_intents` (files of deleted rows, still to
//! be unlinked) and `janitor_orphan_candidates` (the sweep's spill). Both are
//! keyed by job id first, so a job's rows are found on the primary key, and
//! the jobs that have rows are listed by skipping from one job id to the next
//! on it (a loose index scan), however many rows a running sweep has spilled.

use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// One of the two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Spill {
    Intents,
    Candidates,
}

impl Spill {
    fn table(self) -> &'static str {
        match self {
            Spill::Intents => "janitor_unlink_intents",
            Spill::Candidates => "janitor_orphan_candidates",
        }
    }
}

/// A job that has not finished: it has a row that has not (`unfinished!`).
/// A job with no row at all is finished (forgotten): rows are created
/// before a job runs, so none will come.
const UNFINISHED: &str =
    concat!("EXISTS (SELECT 1 FROM job_results WHERE job_results.job_id = jobs.job_id AND ", unfinished!(), ")");

/// Up to `limit` job ids from `from` on (in id order) that have rows in the
/// table and that are finished or have no job row.
pub(crate) async fn finished_jobs(db: &PgPool, spill: Spill, from: Uuid, limit: i64) -> sqlx::Result<Vec<Uuid>> {
    let table = spill.table();
    sqlx::query_scalar(&format!(
        "WITH RECURSIVE jobs(job_id) AS (
             (SELECT job_id FROM {table} WHERE job_id >= $1 ORDER BY job_id LIMIT 1)
             UNION ALL
             SELECT (SELECT t.job_id FROM {table} t WHERE t.job_id > jobs.job_id ORDER BY t.job_id LIMIT 1)
             FROM jobs WHERE jobs.job_id IS NOT NULL
         )
         SELECT job_id FROM jobs WHERE job_id IS NOT NULL AND NOT {UNFINISHED}
         LIMIT $2"
    ))
    .bind(from)
    .bind(limit)
    .fetch_all(db)
    .await
}

/// The first job id after `id`, for paging: `None` after the last one.
pub(crate) fn after(id: Uuid) -> Option<Uuid> {
    id.as_u128().checked_add(1).map(Uuid::from_u128)
}

/// How many rows these jobs have in the table.
pub(crate) async fn count(db: &PgPool, spill: Spill, jobs: &[Uuid]) -> sqlx::Result<i64> {
    sqlx::query_scalar(&format!("SELECT count(*) FROM {} WHERE job_id = ANY($1)", spill.table()))
        .bind(jobs)
        .fetch_one(db)
        .await
}

/// One unlink intent left by a job: its files, whose rows are deleted.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct LeftIntent {
    pub batch: i64,
    pub image_ids: Vec<i64>,
    pub paths: Vec<String>,
}

/// The job's next intent after batch `after`.
pub(crate) async fn next_intent(db: &PgPool, job_id: Uuid, after: i64) -> sqlx::Result<Option<LeftIntent>> {
    sqlx::query_as(
        "SELECT batch, image_ids, paths FROM janitor_unlink_intents
         WHERE job_id = $1 AND batch > $2 ORDER BY batch LIMIT 1",
    )
    .bind(job_id)
    .bind(after)
    .fetch_optional(db)
    .await
}

/// Deletes one intent, once its files are dealt with.
pub(crate) async fn delete_intent(conn: &mut PgConnection, job_id: Uuid, batch: i64) -> sqlx::Result<i64> {
    let done = sqlx::query("DELETE FROM janitor_unlink_intents WHERE job_id = $1 AND batch = $2")
        .bind(job_id)
        .bind(batch)
        .execute(conn)
        .await?;
    Ok(done.rows_affected() as i64)
}

/// Deletes the next `limit` candidates of one job, in path order past
/// `after`, and moves `after` to the last path removed.
pub(crate) async fn delete_candidates(
    conn: &mut PgConnection,
    job_id: Uuid,
    after: &mut String,
    limit: i64,
) -> sqlx::Result<i64> {
    // `path` is `COLLATE "C"`: the comparison, the order and `max` all use
    // byte order, the order of the primary key.
    let (removed, last): (i64, Option<String>) = sqlx::query_as(
        "WITH gone AS (
             DELETE FROM janitor_orphan_candidates
             WHERE job_id = $1 AND path = ANY (ARRAY(
                     SELECT path FROM janitor_orphan_candidates
                     WHERE job_id = $1 AND path > $2 ORDER BY path LIMIT $3))
             RETURNING path
         )
         SELECT count(*), max(path) FROM gone",
    )
    .bind(job_id)
    .bind(after.as_str())
    .bind(limit)
    .fetch_one(conn)
    .await?;
    if let Some(last) = last {
        *after = last;
    }
    Ok(removed)
}
