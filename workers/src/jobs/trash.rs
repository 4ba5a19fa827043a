//! `cleanup_trash`: empties the quarantine folders (`.janitor-trash/<job
//! id>/`) of jobs that ended more than the retention ago (default 7 days).
//! A folder of a job still queued or running is never touched; a folder
//! without a job row is judged by its own modification time. The trash is
//! listed, measured and removed through the storage wall: a symlinked
//! `.janitor-trash` fails the job, a symlinked job folder is an error item,
//! and nothing outside the root is ever deleted.
//!
//! Idempotent: an emptied folder is gone. One batch: the whole purge commits
//! its counts at once.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::PhaseEnd;
use crate::jobs::context::RunContext;
use crate::progress::{Counters, Cursor, ErrorItem, Progress};
use crate::storage::trash;

pub const OPERATION: &str = "cleanup_trash";

pub(crate) async fn run(
    ctx: &RunContext<'_>,
    retention: Duration,
    progress: &mut Progress,
) -> anyhow::Result<PhaseEnd> {
    let started = std::time::Instant::now();
    // Nothing is older than the epoch: a retention longer than the clock
    // (refused as input anyway) purges nothing, and never panics.
    let cutoff = SystemTime::from(progress.checkpoint.as_of).checked_sub(retention).unwrap_or(SystemTime::UNIX_EPOCH);
    let storage = ctx.storage.clone();
    let folders = match tokio::task::spawn_blocking(move || trash::folders(&storage)).await? {
        Ok(folders) => folders,
        // A trash that cannot be listed through the wall (a symlink, not a
        // folder, no permission) will not list on a retry either: the job
        // fails with the reason, and nothing is purged.
        Err(err) => return Ok(PhaseEnd::Refused(format!("refusing to purge the trash: {err:#}"))),
    };
    let ids: Vec<Uuid> = folders.iter().map(|(id, _)| *id).collect();
    let ended: Vec<(Uuid, Option<chrono::DateTime<chrono::Utc>>, String)> =
        sqlx::query_as("SELECT job_id, finished_at, status FROM job_results WHERE job_id = ANY($1)")
            .bind(&ids)
            .fetch_all(ctx.pool)
            .await?;
    let mut delta = Counters::default();
    let mut errors = Vec::new();
    for (job_id, modified) in folders {
        let old_enough = match ended.iter().find(|(id, _, _)| *id == job_id) {
            Some((_, Some(finished), _)) => SystemTime::from(*finished) < cutoff,
            Some((_, None, _)) => false, // queued or running: hands off
            None => modified < cutoff,
        };
        if !old_enough {
            continue;
        }
        let (storage, dry_run) = (ctx.storage.clone(), ctx.dry_run);
        // A dry run measures what a purge would remove; both walk the
        // folder through the wall (see `storage::trash`).
        let outcome = tokio::task::spawn_blocking(move || {
            if dry_run {
                trash::measure(&storage, job_id)
            } else {
                trash::purge(&storage, job_id)
            }
        })
        .await?;
        match outcome {
            Ok(tally) => {
                delta.deleted += tally.files as i64;
                delta.bytes += tally.bytes as i64;
            }
            Err(err) => errors.push(ErrorItem {
                image_id: None,
                path: trash::job_folder(job_id),
                error: format!("cannot purge: {err:#}"),
                operation: OPERATION.to_owned(),
            }),
        }
    }
    delta.errors = errors.len() as i64;
    let mut next = progress.clone();
    next.record(delta, errors, Cursor::AfterPath(String::new()));
    next.observe(started.elapsed());
    let mut conn = ctx.pool.acquire().await?;
    crate::results::save_progress(&mut conn, ctx.lease, &next).await?;
    *progress = next;
    Ok(PhaseEnd::Done)
}
