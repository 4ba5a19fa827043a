//! A bulk job's estimated total, computed once when it first starts (a
//! resumed run keeps the first estimate), so that the console can draw a
//! progress bar with a maximum and an ETA. An estimate, never a promise:
//! rows and files come and go while the job runs, and the job does not
//! depend on it. Computing it never fails or delays a job for long.
//!
//! - expired, old results: the candidates the job's condition matches now
//!   (one count over the index its pager walks);
//! - the orphan sweep: the files the last completed sweep looked at (its
//!   progress is the files it has looked at);
//! - `all`: the sum of its phases' estimates, counted as its items are;
//! - a session's few images, prune and purge-trash: none.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

use super::old_results;
use crate::job::CleanupJob;

/// The most time an estimate may take (the server's `statement_timeout`).
const TIMEOUT: Duration = Duration::from_secs(2);

const EXPIRED: &str = "SELECT count(*) FROM images WHERE storage_type = 'temporary' AND expires_at < $1";
const OLD_RESULTS: &str = "SELECT count(DISTINCT result_image_id) FROM face_swap_tasks
    WHERE status IN ('completed', 'failed') AND result_image_id IS NOT NULL AND completed_at < $1";
const LAST_SWEEP: &str = "SELECT (checkpoint->>'files_scanned')::bigint FROM job_results
    WHERE operation IN ('cleanup_orphaned_files', 'cleanup_all') AND status = 'completed' AND NOT dry_run
      AND checkpoint ? 'files_scanned' AND (checkpoint->>'files_scanned')::bigint > 0
    ORDER BY finished_at DESC LIMIT 1";

/// The job's estimated total, if it has one and it came in time. Its
/// statements run in one transaction with a `statement_timeout`, so that a
/// slow count or a lock on `images` is ended by the server, not left
/// running. The caller's heartbeat keeps the lease meanwhile.
pub(crate) async fn total(pool: &PgPool, job: &CleanupJob, as_of: DateTime<Utc>) -> Option<i64> {
    if matches!(job, CleanupJob::Session { .. } | CleanupJob::PurgeTrash { .. } | CleanupJob::Prune { .. }) {
        return None;
    }
    match estimate(pool, job, as_of).await {
        Ok(total) => total,
        Err(err) => {
            tracing::debug!(error = %err, "no estimate of the job's total");
            None
        }
    }
}

async fn estimate(pool: &PgPool, job: &CleanupJob, as_of: DateTime<Utc>) -> sqlx::Result<Option<i64>> {
    let mut tx = pool.begin().await?;
    sqlx::query(&format!("SET LOCAL statement_timeout = {}", TIMEOUT.as_millis())).execute(&mut *tx).await?;
    let total = match job {
        CleanupJob::Expired => Some(count(&mut tx, EXPIRED, as_of).await?),
        CleanupJob::OldResults { days_old } => {
            Some(count(&mut tx, OLD_RESULTS, old_results::cutoff(as_of, *days_old)).await?)
        }
        CleanupJob::Orphaned { .. } => last_sweep(&mut tx).await?,
        CleanupJob::All { days_old, .. } => {
            let rows = count(&mut tx, EXPIRED, as_of).await?
                + count(&mut tx, OLD_RESULTS, old_results::cutoff(as_of, *days_old)).await?;
            Some(rows + last_sweep(&mut tx).await?.unwrap_or(0))
        }
        CleanupJob::Session { .. } | CleanupJob::PurgeTrash { .. } | CleanupJob::Prune { .. } => None,
    };
    tx.commit().await?;
    Ok(total)
}

async fn count(conn: &mut PgConnection, sql: &'static str, at: DateTime<Utc>) -> sqlx::Result<i64> {
    sqlx::query_scalar(sql).bind(at).fetch_one(conn).await
}

async fn last_sweep(conn: &mut PgConnection) -> sqlx::Result<Option<i64>> {
    Ok(sqlx::query_scalar::<_, Option<i64>>(LAST_SWEEP).fetch_optional(conn).await?.flatten())
}
