//! The Postgres tables pruned by age: finished `job_results` rows (three
//! classes), `audit_log`, `schedule_ticks` and expired `console_sessions`.
//!
//! Every delete is one statement: pick the next `limit` keys past the
//! batch's cursor on an index ordered by age, delete those rows by key, and
//! return how many went and the newest age among them, the next cursor. Rows
//! behind the cursor are all gone, so the next scan starts past the dead
//! index entries this run left, and a batch at the end costs what the first
//! one did. The cursor is inclusive (`>=`): rows sharing its age are looked
//! at again, which finds only the ones still there.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

const UNFINISHED: &str = unfinished!();

/// The retention class of a job row: `session` (completed session jobs),
/// `completed` (other completed jobs, and skipped ones), `failed` (every
/// other end: failed, dead-lettered, cancelled), or NULL for a job that has
/// not finished (`unfinished!`). The index `janitor_job_results_retention`
/// (migration `20261130000030_retention`) is on exactly this expression:
/// change both together (a test checks that the queries use the index).
const CLASS: &str = concat!(
    "CASE WHEN ",
    unfinished!(),
    " THEN NULL \
     WHEN status = 'completed' AND operation = 'cleanup_session' THEN 'session' \
     WHEN status IN ('completed', 'skipped') THEN 'completed' \
     ELSE 'failed' END"
);

/// What ages out by a timestamp column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Aged {
    /// Finished job rows of one class: `session` (completed session jobs),
    /// `completed` (other completed jobs, and skipped ones), `failed`
    /// (every other end: failed, dead-lettered, cancelled).
    Jobs(&'static str),
    AuditLog,
    /// Console sessions by their expiry: the cutoff is the job's reference
    /// time, so a session goes once it has expired.
    ConsoleSessions,
}

impl Aged {
    /// `$1` the cutoff, `$2` the cursor (NULL: from the start), `$3` the
    /// batch size, and for jobs `$4` the class. Returns the rows removed and
    /// the newest age among them.
    fn delete(self) -> String {
        match self {
            // The batch's keys come from the class index in age order; the
            // delete finds them on the primary key and checks again, on the
            // version it deletes, that the job is still finished (a retried
            // job is not). It names no column of the class index, so the
            // planner cannot trade the primary key for it.
            Aged::Jobs(_) => format!(
                "WITH gone AS (
                     DELETE FROM job_results
                     WHERE job_id = ANY (ARRAY(
                             SELECT job_id FROM job_results
                             WHERE {CLASS} = $4
                               AND finished_at < $1 AND finished_at >= coalesce($2, '-infinity'::timestamptz)
                             ORDER BY finished_at LIMIT $3))
                       AND NOT {UNFINISHED} AND finished_at < $1
                     RETURNING finished_at
                 )
                 SELECT count(*), max(finished_at) FROM gone"
            ),
            // Served by `audit_log_at`, then the primary key (audit rows never
            // change, so there is nothing to check again).
            Aged::AuditLog => "WITH gone AS (
                     DELETE FROM audit_log
                     WHERE id = ANY (ARRAY(
                             SELECT id FROM audit_log
                             WHERE at < $1 AND at >= coalesce($2, '-infinity'::timestamptz)
                             ORDER BY at LIMIT $3))
                     RETURNING at
                 )
                 SELECT count(*), max(at) FROM gone"
                .to_owned(),
            // Served by `console_sessions_expires`, then the primary key. A
            // session's expiry never changes, so there is nothing to check
            // again; a logout that deleted the row first leaves nothing to do.
            Aged::ConsoleSessions => "WITH gone AS (
                     DELETE FROM console_sessions
                     WHERE id_hash = ANY (ARRAY(
                             SELECT id_hash FROM console_sessions
                             WHERE expires_at < $1 AND expires_at >= coalesce($2, '-infinity'::timestamptz)
                             ORDER BY expires_at LIMIT $3))
                     RETURNING expires_at
                 )
                 SELECT count(*), max(expires_at) FROM gone"
                .to_owned(),
        }
    }

    fn count(self) -> String {
        match self {
            Aged::Jobs(_) => {
                format!("SELECT count(*) FROM job_results WHERE {CLASS} = $2 AND finished_at < $1")
            }
            Aged::AuditLog => "SELECT count(*) FROM audit_log WHERE at < $1".to_owned(),
            Aged::ConsoleSessions => "SELECT count(*) FROM console_sessions WHERE expires_at < $1".to_owned(),
        }
    }
}

/// Deletes the next batch of rows older than `cutoff`, from `after` on, and
/// moves `after` to the newest age removed. Returns how many went (0: none
/// are left).
pub(crate) async fn delete_aged(
    conn: &mut PgConnection,
    table: Aged,
    cutoff: DateTime<Utc>,
    after: &mut Option<DateTime<Utc>>,
    limit: i64,
) -> sqlx::Result<i64> {
    let sql = table.delete();
    let query = sqlx::query_as(&sql).bind(cutoff).bind(*after).bind(limit);
    let query = match table {
        Aged::Jobs(class) => query.bind(class),
        Aged::AuditLog | Aged::ConsoleSessions => query,
    };
    let (removed, newest): (i64, Option<DateTime<Utc>>) = query.fetch_one(conn).await?;
    *after = newest.or(*after);
    Ok(removed)
}

/// How many rows [`delete_aged`] would remove.
pub(crate) async fn count_aged(db: &PgPool, table: Aged, cutoff: DateTime<Utc>) -> sqlx::Result<i64> {
    let sql = table.count();
    let query = sqlx::query_scalar(&sql).bind(cutoff);
    match table {
        Aged::Jobs(class) => query.bind(class).fetch_one(db).await,
        Aged::AuditLog | Aged::ConsoleSessions => query.fetch_one(db).await,
    }
}

/// A schedule of one queue: its ticks are kept and pruned apart from
/// another queue's schedule of the same name.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct Ticker {
    pub queue: String,
    pub schedule: String,
}

/// The schedules that have ticks recorded, on every queue.
pub(crate) async fn schedules(db: &PgPool) -> sqlx::Result<Vec<Ticker>> {
    sqlx::query_as("SELECT DISTINCT queue, schedule FROM schedule_ticks ORDER BY queue, schedule").fetch_all(db).await
}

/// Which ticks of one schedule may go: those before `before`, except `keep`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct TickBounds {
    /// The cutoff, or the schedule's newest tick if that is older: the
    /// scheduler resumes from the newest tick, so it always stays.
    before: DateTime<Utc>,
    /// The newest tick that ran (`janitor schedules` shows it).
    keep: Option<DateTime<Utc>>,
}

pub(crate) async fn tick_bounds(db: &PgPool, ticker: &Ticker, cutoff: DateTime<Utc>) -> sqlx::Result<TickBounds> {
    // Both are backward scans of the primary key that stop at their first row.
    let (newest, keep): (Option<DateTime<Utc>>, Option<DateTime<Utc>>) = sqlx::query_as(
        "SELECT (SELECT max(scheduled_at) FROM schedule_ticks WHERE queue = $1 AND schedule = $2),
                (SELECT max(scheduled_at) FROM schedule_ticks
                 WHERE queue = $1 AND schedule = $2 AND outcome = 'enqueued')",
    )
    .bind(&ticker.queue)
    .bind(&ticker.schedule)
    .fetch_one(db)
    .await?;
    Ok(TickBounds { before: newest.map_or(cutoff, |newest| newest.min(cutoff)), keep })
}

/// Deletes the next batch of one schedule's ticks, on its primary key.
pub(crate) async fn delete_ticks(
    conn: &mut PgConnection,
    ticker: &Ticker,
    bounds: TickBounds,
    after: &mut Option<DateTime<Utc>>,
    limit: i64,
) -> sqlx::Result<i64> {
    let (removed, newest): (i64, Option<DateTime<Utc>>) = sqlx::query_as(
        "WITH gone AS (
             DELETE FROM schedule_ticks
             WHERE queue = $6 AND schedule = $1 AND scheduled_at = ANY (ARRAY(
                     SELECT scheduled_at FROM schedule_ticks
                     WHERE queue = $6 AND schedule = $1 AND scheduled_at < $2 AND scheduled_at IS DISTINCT FROM $3
                       AND scheduled_at >= coalesce($4, '-infinity'::timestamptz)
                     ORDER BY scheduled_at LIMIT $5))
             RETURNING scheduled_at
         )
         SELECT count(*), max(scheduled_at) FROM gone",
    )
    .bind(&ticker.schedule)
    .bind(bounds.before)
    .bind(bounds.keep)
    .bind(*after)
    .bind(limit)
    .bind(&ticker.queue)
    .fetch_one(conn)
    .await?;
    *after = newest.or(*after);
    Ok(removed)
}

/// How many ticks of one schedule [`delete_ticks`] would remove.
pub(crate) async fn count_ticks(db: &PgPool, ticker: &Ticker, bounds: TickBounds) -> sqlx::Result<i64> {
    sqlx::query_scalar(
        "SELECT count(*) FROM schedule_ticks
         WHERE queue = $4 AND schedule = $1 AND scheduled_at < $2 AND scheduled_at IS DISTINCT FROM $3",
    )
    .bind(&ticker.schedule)
    .bind(bounds.before)
    .bind(bounds.keep)
    .bind(&ticker.queue)
    .fetch_one(db)
    .await
}
