//! `cleanup_trash`: empties the quarantine folders (`.janitor-trash/<job
//! id>/`) of jobs that ended more than the retention ago (default 7 days).
//! A folder of a job still queued or running is never touched; a folder
//! without a job row is judged by its own modification time.
//!
//! Idempotent: an emptied folder is gone. One batch: the whole purge commits
//! its counts at once.

use std::time::{Duration, SystemTime};

use uuid::Uuid;

use super::PhaseEnd;
use crate::engine::RunContext;
use crate::progress::{Counters, Cursor, ErrorItem, Progress};
use crate::storage::trash;

pub const OPERATION: &str = "cleanup_trash";

pub(crate) async fn run(
    ctx: &RunContext<'_>,
    retention: Duration,
    progress: &mut Progress,
) -> anyhow::Result<PhaseEnd> {
    let started = std::time::Instant::now();
    let cutoff = SystemTime::from(progress.checkpoint.as_of) - retention;
    let root = ctx.storage.root().to_owned();
    let folders = tokio::task::spawn_blocking(move || trash::folders(&root)).await??;
    let ids: Vec<Uuid> = folders.iter().map(|(id, _, _)| *id).collect();
    let ended: Vec<(Uuid, Option<chrono::DateTime<chrono::Utc>>, String)> =
        sqlx::query_as("SELECT job_id, finished_at, status FROM job_results WHERE job_id = ANY($1)")
            .bind(&ids)
            .fetch_all(&ctx.engine.pool)
            .await?;
    let mut delta = Counters::default();
    let mut errors = Vec::new();
    for (job_id, folder, modified) in folders {
        let old_enough = match ended.iter().find(|(id, _, _)| *id == job_id) {
            Some((_, Some(finished), _)) => SystemTime::from(*finished) < cutoff,
            Some((_, None, _)) => false, // queued or running: hands off
            None => modified < cutoff,
        };
        if !old_enough {
            continue;
        }
        let (files, bytes) = trash::measure(&folder);
        if ctx.dry_run {
            delta.deleted += files as i64;
            delta.bytes += bytes as i64;
            continue;
        }
        let removing = folder.clone();
        match tokio::task::spawn_blocking(move || std::fs::remove_dir_all(removing)).await? {
            Ok(()) => {
                delta.deleted += files as i64;
                delta.bytes += bytes as i64;
            }
            Err(err) => errors.push(ErrorItem {
                image_id: None,
                path: folder.display().to_string(),
                error: format!("cannot purge: {err}"),
                operation: OPERATION.to_owned(),
            }),
        }
    }
    delta.errors = errors.len() as i64;
    let mut next = progress.clone();
    next.record(delta, errors, Cursor::AfterPath(String::new()));
    next.observe(started.elapsed());
    let mut conn = ctx.engine.pool.acquire().await?;
    crate::results::save_progress(&mut conn, ctx.lease, &next).await?;
    *progress = next;
    Ok(PhaseEnd::Done)
}
