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
use sqlx::PgPool;

use super::old_results;
use crate::job::CleanupJob;

/// The most time an estimate may take.
const TIMEOUT: Duration = Duration::from_secs(2);

const EXPIRED: &str = "SELECT count(*) FROM images WHERE storage_type = 'temporary' AND expires_at < $1";
const OLD_RESULTS: &str = "SELECT count(DISTINCT result_image_id) FROM face_swap_tasks
    WHERE status IN ('completed', 'failed') AND result_image_id IS NOT NULL AND completed_at < $1";
const LAST_SWEEP: &str = "SELECT (checkpoint->>'files_scanned')::bigint FROM job_results
    WHERE operation IN ('cleanup_orphaned_files', 'cleanup_all') AND status = 'completed' AND NOT dry_run
      AND checkpoint ? 'files_scanned' AND (checkpoint->>'files_scanned')::bigint > 0
    ORDER BY finished_at DESC LIMIT 1";

/// The job's estimated total of items, if it has one and it came in time.
pub(crate) async fn total(pool: &PgPool, job: &CleanupJob, as_of: DateTime<Utc>) -> Option<i64> {
    let estimate = async {
        let count = |sql: &'static str, at: DateTime<Utc>| sqlx::query_scalar::<_, i64>(sql).bind(at).fetch_one(pool);
        let last_sweep = || sqlx::query_scalar::<_, Option<i64>>(LAST_SWEEP).fetch_optional(pool);
        sqlx::Result::<Option<i64>>::Ok(match job {
            CleanupJob::Expired => Some(count(EXPIRED, as_of).await?),
            CleanupJob::OldResults { days_old } => {
                Some(count(OLD_RESULTS, old_results::cutoff(as_of, *days_old)).await?)
            }
            CleanupJob::Orphaned { .. } => last_sweep().await?.flatten(),
            CleanupJob::All { days_old, .. } => {
                let rows =
                    count(EXPIRED, as_of).await? + count(OLD_RESULTS, old_results::cutoff(as_of, *days_old)).await?;
                Some(rows + last_sweep().await?.flatten().unwrap_or(0))
            }
            CleanupJob::Session { .. } | CleanupJob::PurgeTrash { .. } | CleanupJob::Prune { .. } => None,
        })
    };
    match tokio::time::timeout(TIMEOUT, estimate).await {
        Ok(Ok(total)) => total,
        Ok(Err(err)) => {
            tracing::debug!(error = %err, "no estimate of the job's total");
            None
        }
        Err(_) => None,
    }
}
