//! `cleanup_trash`: empties the quarantine folders (`.janitor-trash/<job
//! id>/`) of jobs that ended more than the retention ago (default 7 days).
//! A folder of a job still queued or running is never touched; a folder
//! without a job row is judged by its own modification time. The trash is
//! listed, measured and removed through the storage wall: a symlinked
//! `.janitor-trash` fails the job, a symlinked job folder is an error item,
//! and nothing outside the root is ever deleted.
//!
//! A job can run again after it ended (`janitor retry` of a failed or
//! cancelled sweep, or `janitor run --job-id` of a failed one) and
//! quarantine new files into its folder, which must then stay for the
//! retention. So a folder is renamed aside before it is removed, while the
//! job's row is held `FOR SHARE` with its end checked again (see
//! [`purge`]).
//!
//! Idempotent: an emptied folder is gone, and one set aside by a purge that
//! stopped is finished by the next. One batch: the whole purge commits its
//! counts at once.

use std::time::{Duration, SystemTime};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::PhaseEnd;
use crate::jobs::context::RunContext;
use crate::progress::{Counters, Cursor, ErrorItem, Progress};
use crate::storage::trash::{self, TrashFolder};
use crate::storage::Tally;

pub const OPERATION: &str = "cleanup_trash";

/// Each listed job's end, if it has a row: `None` while queued or running.
type Ends = Vec<(Uuid, Option<DateTime<Utc>>)>;

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
    let mut folders = match tokio::task::spawn_blocking(move || trash::folders(&storage)).await? {
        Ok(folders) => folders,
        // A trash that cannot be listed through the wall (a symlink, not a
        // folder, no permission) will not list on a retry either: the job
        // fails with the reason, and nothing is purged.
        Err(err) => return Ok(PhaseEnd::Refused(format!("refusing to purge the trash: {err:#}"))),
    };
    // Folders an earlier purge set aside go first, so that their jobs'
    // folders can be set aside after them.
    folders.sort_by_key(|(folder, _)| !folder.set_aside);
    let ids: Vec<Uuid> = folders.iter().map(|(folder, _)| folder.job_id).collect();
    let ends = ends(ctx.pool, &ids).await?;
    let mut delta = Counters::default();
    let mut errors = Vec::new();
    for (folder, modified) in folders {
        if !ended_before(&ends, folder.job_id, modified, cutoff) {
            continue;
        }
        let outcome = if ctx.dry_run {
            // A dry run measures what a purge would remove, through the
            // wall (see `storage::trash`), and moves nothing.
            let storage = ctx.storage.clone();
            tokio::task::spawn_blocking(move || trash::measure(&storage, folder)).await?
        } else {
            purge(ctx, folder, modified, cutoff).await?
        };
        match outcome {
            Ok(tally) => {
                delta.deleted += tally.files as i64;
                delta.bytes += tally.bytes as i64;
            }
            Err(err) => errors.push(ErrorItem {
                image_id: None,
                path: folder.path(),
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

/// Removes one folder whose job ended before the cutoff, as the listing
/// found it. The outer error is the database's (the job fails and is
/// retried); the inner one is the folder's error item.
async fn purge(
    ctx: &RunContext<'_>,
    folder: TrashFolder,
    modified: SystemTime,
    cutoff: SystemTime,
) -> anyhow::Result<anyhow::Result<Tally>> {
    let (storage, job_id) = (ctx.storage.clone(), folder.job_id);
    if !folder.set_aside {
        // What covers "the job ended before the cutoff" and setting its
        // folder aside: the job's row, read `FOR SHARE` in a transaction
        // held across the rename. A run of the job after its end (`janitor
        // retry`, `janitor run --job-id`) must update that row to start, so
        // it waits for the rename, and then quarantines into a new
        // `<job id>/` (each batch resolves it by name from the root), never
        // into the folder being removed. A run that started before this read
        // shows as unfinished here, and its folder is left alone. A folder
        // whose job has no row (pruned) has no run to wait for.
        let mut tx = ctx.pool.begin().await?;
        let end: Option<(Option<DateTime<Utc>>,)> =
            sqlx::query_as("SELECT finished_at FROM job_results WHERE job_id = $1 FOR SHARE")
                .bind(job_id)
                .fetch_optional(&mut *tx)
                .await?;
        let ends: Ends = end.map(|(finished,)| (job_id, finished)).into_iter().collect();
        if !ended_before(&ends, job_id, modified, cutoff) {
            return Ok(Ok(Tally::default()));
        }
        let set = tokio::task::spawn_blocking(move || trash::set_aside(&storage, job_id)).await?;
        tx.commit().await?;
        match set {
            Ok(true) => {}
            Ok(false) => return Ok(Ok(Tally::default())),
            Err(err) => return Ok(Err(err)),
        }
    }
    // A folder set aside, by this purge or by one that stopped before it
    // finished: nothing writes into it any more.
    let (storage, aside) = (ctx.storage.clone(), TrashFolder { job_id, set_aside: true });
    Ok(tokio::task::spawn_blocking(move || trash::purge(&storage, aside)).await?)
}

/// The ends of the jobs among `ids` that have a row.
async fn ends(pool: &PgPool, ids: &[Uuid]) -> sqlx::Result<Ends> {
    sqlx::query_as("SELECT job_id, finished_at FROM job_results WHERE job_id = ANY($1)").bind(ids).fetch_all(pool).await
}

/// Whether the job ended before the cutoff: by its row's end if it has a
/// row (never while it is queued or running), else by the folder's time.
fn ended_before(ends: &Ends, job_id: Uuid, modified: SystemTime, cutoff: SystemTime) -> bool {
    match ends.iter().find(|(id, _)| *id == job_id) {
        Some((_, Some(finished))) => SystemTime::from(*finished) < cutoff,
        Some((_, None)) => false, // queued or running: hands off
        None => modified < cutoff,
    }
}
