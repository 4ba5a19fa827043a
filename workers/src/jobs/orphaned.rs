//! `cleanup_orphaned_files`: files under the category folders that no
//! `images.storage_path` references, older than a grace period (the app
//! writes a file before it commits the row that references it).
//!
//! Memory stays bounded: a blocking thread walks the folders in path order
//! and hands over batches through a channel of two; each batch is checked
//! against the unique index on `storage_path` with one `= ANY` query. Only a
//! batch is ever in memory, whatever the size of the store.
//!
//! Resumes after the last path of the last committed batch. Each batch's
//! orphans are saved in the checkpoint before they are deleted, so a rerun
//! after a crash finishes that batch first and the counts stay exact.
//! Idempotent: a deleted file is not found again.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use tokio::sync::mpsc;

use super::orphan_guards as guards;
use super::PhaseEnd;
use crate::engine::RunContext;
use crate::progress::{Counters, Cursor, ErrorItem, PendingOrphans, Progress};
use crate::storage::{RelativePath, Removal, ScanItem};

pub const OPERATION: &str = "cleanup_orphaned_files";

/// Which of the given paths some row references.
const REFERENCED: &str = "SELECT storage_path FROM images WHERE storage_path = ANY($1)";

pub(crate) async fn run(ctx: &RunContext<'_>, min_age: Duration, progress: &mut Progress) -> anyhow::Result<PhaseEnd> {
    if let Some(reason) = guards::unusable_category(ctx) {
        return Ok(PhaseEnd::Refused(reason));
    }
    // One sweep per storage root at a time; held until this phase returns.
    let Some(_lock) = guards::sweep_lock(ctx).await? else {
        return Ok(PhaseEnd::Skipped(format!(
            "another orphan sweep of {} is running; skipped",
            ctx.storage.root().display()
        )));
    };
    let grace_ends = SystemTime::from(progress.checkpoint.as_of) - min_age;
    if !ctx.dry_run && progress.checkpoint.survey.is_none() && progress.checkpoint.cursor == Cursor::Start {
        // Count before deleting anything: a sweep that would delete too much
        // of the store deletes nothing.
        let survey = guards::survey(ctx, grace_ends).await?;
        let mut next = progress.clone();
        next.checkpoint.survey = Some(survey);
        save(ctx, &next).await?;
        *progress = next;
        if let Some(reason) = guards::too_many(ctx, survey) {
            return Ok(PhaseEnd::Refused(reason));
        }
    }
    if let Some(pending) = progress.checkpoint.pending.clone() {
        finish_pending(ctx, pending, Vec::new(), progress, true, std::time::Instant::now()).await?;
    }
    let after = match &progress.checkpoint.cursor {
        Cursor::AfterPath(path) => Some(path.clone()),
        _ => None,
    };
    let (mut batches, walker) = walk(ctx, after);
    while let Some(items) = batches.recv().await {
        if ctx.control.cancel.is_cancelled() || ctx.remaining(progress) == Some(0) {
            drop(batches);
            walker.await?;
            let end = if ctx.control.cancel.is_cancelled() { PhaseEnd::Interrupted } else { PhaseEnd::Done };
            return Ok(end);
        }
        let started = std::time::Instant::now();
        let (mut pending, mut scan_errors) = plan(ctx, &items, grace_ends).await?;
        if let Some(remaining) = ctx.remaining(progress) {
            pending.files.truncate(usize::try_from(remaining).unwrap_or(usize::MAX));
        }
        if !ctx.dry_run {
            let mut next = progress.clone();
            let count = scan_errors.len() as i64;
            next.add(Counters { errors: count, ..Counters::default() }, std::mem::take(&mut scan_errors));
            next.checkpoint.pending = Some(pending.clone());
            save(ctx, &next).await?;
            *progress = next;
        }
        finish_pending(ctx, pending, scan_errors, progress, false, started).await?;
        ctx.batch_done(progress, started.elapsed());
    }
    walker.await?;
    Ok(PhaseEnd::Done)
}

/// The walk after `after`, on a blocking thread, handed over in batches
/// through a channel of two (so memory holds at most three batches).
pub(super) fn walk(
    ctx: &RunContext<'_>,
    after: Option<String>,
) -> (mpsc::Receiver<Vec<ScanItem>>, tokio::task::JoinHandle<()>) {
    let (sender, batches) = mpsc::channel::<Vec<ScanItem>>(2);
    let scanner = ctx.storage.scanner();
    let batch_size = ctx.engine.settings.batch_size;
    let walker = tokio::task::spawn_blocking(move || {
        let mut batch = Vec::with_capacity(batch_size);
        for item in scanner.walk(after.as_deref()) {
            batch.push(item);
            if batch.len() == batch_size && sender.blocking_send(std::mem::take(&mut batch)).is_err() {
                return; // The sweep stopped listening.
            }
        }
        if !batch.is_empty() {
            let _ = sender.blocking_send(batch);
        }
    });
    (batches, walker)
}

/// Sorts one scanned batch into orphans (returned as the pending batch),
/// referenced files, files still in their grace period and unreadable
/// entries (returned as error items).
pub(super) async fn plan(
    ctx: &RunContext<'_>,
    items: &[ScanItem],
    grace_ends: SystemTime,
) -> anyhow::Result<(PendingOrphans, Vec<ErrorItem>)> {
    let mut errors = Vec::new();
    let mut old_enough = Vec::new();
    for item in items {
        match item {
            ScanItem::Error { path, error } => errors.push(error_item(path, error.clone())),
            ScanItem::File(file) if file.modified < grace_ends => match RelativePath::parse(&file.path) {
                Ok(_) => old_enough.push((file.path.clone(), file.size)),
                Err(err) => errors.push(error_item(&file.path, err.to_string())),
            },
            ScanItem::File(_) => {}
        }
    }
    let pending = PendingOrphans {
        files: unreferenced(ctx, old_enough).await?,
        cursor: items.last().map(|item| item.path().to_owned()).unwrap_or_default(),
        scanned: items.len() as u64,
    };
    Ok((pending, errors))
}

/// Deletes a batch's orphans (re-checking them against the database first)
/// and commits their counts with the batch's cursor.
async fn finish_pending(
    ctx: &RunContext<'_>,
    pending: PendingOrphans,
    mut errors: Vec<ErrorItem>,
    progress: &mut Progress,
    resumed: bool,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let mut delta = Counters::default();
    if ctx.dry_run {
        delta.deleted = pending.files.len() as i64;
        delta.bytes = pending.files.iter().map(|(_, size)| *size as i64).sum();
    } else {
        // A row committed since the scan protects its file.
        let mut files = Vec::new();
        for (path, size) in unreferenced(ctx, pending.files).await? {
            match RelativePath::parse(&path) {
                Ok(path) => files.push((path, size)),
                Err(err) => errors.push(error_item(&path, err.to_string())),
            }
        }
        ctx.pace(files.len()).await;
        let paths = files.iter().map(|(path, _)| path.clone()).collect();
        let quarantine = ctx.engine.settings.quarantine.then_some(ctx.lease.job_id);
        let removals = ctx.storage.dispose_many(paths, ctx.engine.settings.unlink_concurrency, quarantine).await;
        for ((path, size), removal) in files.iter().zip(removals) {
            match removal {
                Removal::Removed => {
                    delta.deleted += 1;
                    delta.bytes += *size as i64;
                }
                // After a crash, a missing file is one this batch deleted
                // before the crash; otherwise something else removed it.
                Removal::Missing if resumed => {
                    delta.deleted += 1;
                    delta.bytes += *size as i64;
                }
                Removal::Missing => {}
                Removal::Failed(message) => errors.push(error_item(path.as_str(), message)),
            }
        }
    }
    delta.errors = errors.len() as i64;
    let mut next = progress.clone();
    next.record(delta, errors, Cursor::AfterPath(pending.cursor));
    next.checkpoint.files_scanned += pending.scanned;
    next.checkpoint.pending = None;
    next.observe(started.elapsed());
    save(ctx, &next).await?;
    *progress = next;
    Ok(())
}

/// The files among `files` that no row references.
async fn unreferenced(ctx: &RunContext<'_>, files: Vec<(String, u64)>) -> sqlx::Result<Vec<(String, u64)>> {
    if files.is_empty() {
        return Ok(files);
    }
    let paths: Vec<&str> = files.iter().map(|(path, _)| path.as_str()).collect();
    let referenced: HashSet<String> =
        sqlx::query_scalar(REFERENCED).bind(&paths).fetch_all(&ctx.engine.pool).await?.into_iter().collect();
    Ok(files.into_iter().filter(|(path, _)| !referenced.contains(path)).collect())
}

async fn save(ctx: &RunContext<'_>, progress: &Progress) -> anyhow::Result<()> {
    let mut conn = ctx.engine.pool.acquire().await?;
    crate::results::save_progress(&mut conn, ctx.lease, progress).await?;
    Ok(())
}

fn error_item(path: &str, error: String) -> ErrorItem {
    ErrorItem { image_id: None, path: path.to_owned(), error, operation: OPERATION.to_owned() }
}
