//! Step 4 of a row batch: the files of deleted rows, unlinked after the
//! commit that deleted the rows.
//!
//! A batch's transaction inserts its files into `janitor_unlink_intents`
//! together with the row deletions. After the commit the unlinker removes the
//! files; the job's next save of its progress (a later batch's transaction,
//! the save between phases, or the job's end) deletes the intent in the
//! statement that records any file that could not be unlinked as an error
//! item. An intent left by a crash is finished by the next run of the job
//! before anything else, so no file is ever lost track of.

use sqlx::{PgConnection, PgPool};

use super::RowSelector;
use crate::jobs::context::RunContext;
use crate::progress::{Counters, ErrorItem, Progress};
use crate::results::JobRecord;
use crate::settings::EngineSettings;
use crate::storage::{RelativePath, Removal, Storage};

/// One batch's files, whose rows are deleted and committed.
pub(super) struct Intent {
    batch: i64,
    files: Vec<(i64, RelativePath)>,
    operation: &'static str,
}

/// What the unlinker did with one intent.
pub(super) struct Unlinked {
    batch: i64,
    errors: Vec<ErrorItem>,
}

/// Records the free rows' files (image id, path) in the batch's transaction.
pub(super) async fn record(
    conn: &mut PgConnection,
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    next: &mut Progress,
    files: Vec<(i64, RelativePath)>,
) -> sqlx::Result<Intent> {
    let batch = next.checkpoint.intents;
    next.checkpoint.intents += 1;
    let ids: Vec<i64> = files.iter().map(|(id, _)| *id).collect();
    let paths: Vec<&str> = files.iter().map(|(_, path)| path.as_str()).collect();
    sqlx::query("INSERT INTO janitor_unlink_intents (job_id, batch, image_ids, paths) VALUES ($1, $2, $3, $4)")
        .bind(ctx.lease.job_id)
        .bind(batch)
        .bind(&ids)
        .bind(&paths)
        .execute(conn)
        .await?;
    Ok(Intent { batch, files, operation: selector.operation })
}

/// Unlinks an intent's files. Their rows are gone (committed), so no task
/// can reference them any more: this needs no lock.
pub(super) async fn unlink(ctx: &RunContext<'_>, intent: Intent) -> Unlinked {
    let errors = remove(&ctx.storage, ctx.settings.unlink_concurrency, intent.files, intent.operation).await;
    Unlinked { batch: intent.batch, errors }
}

/// Unlinks files whose rows are deleted and committed; each one that could
/// not be unlinked is an error item of `operation`.
async fn remove(
    storage: &Storage,
    concurrency: usize,
    files: Vec<(i64, RelativePath)>,
    operation: &str,
) -> Vec<ErrorItem> {
    let removals = storage.remove_many(files.iter().map(|(_, path)| path.clone()).collect(), concurrency).await;
    files
        .into_iter()
        .zip(removals)
        .filter_map(|((id, path), removal)| match removal {
            Removal::Removed | Removal::Missing => None,
            Removal::Failed(message) => Some(ErrorItem {
                image_id: Some(id),
                path: path.as_str().to_owned(),
                error: format!(
                    "row deleted, but its file could not be unlinked ({message}); the orphan sweep will retry it"
                ),
                operation: operation.to_owned(),
            }),
        })
        .collect()
}

/// Counts the failures of intents that were carried out, and marks the
/// intents settled: the next save of `progress` drops them in the statement
/// that writes these counts.
pub(super) fn settle(progress: &mut Progress, unlinked: &[Unlinked]) {
    for done in unlinked {
        progress.add(Counters { errors: done.errors.len() as i64, ..Counters::default() }, done.errors.clone());
        progress.settled.push(done.batch);
    }
}

/// Settles unlinks outside a batch and saves the progress at once.
pub(super) async fn confirm(
    ctx: &RunContext<'_>,
    progress: &mut Progress,
    unlinked: Vec<Unlinked>,
) -> anyhow::Result<()> {
    let mut next = progress.clone();
    settle(&mut next, &unlinked);
    let mut conn = ctx.pool.acquire().await?;
    crate::results::save_progress(&mut conn, ctx.lease, &next).await?;
    *progress = next;
    progress.saved();
    Ok(())
}

/// Finishes the intents an earlier run of this job committed but did not
/// confirm (it crashed, lost its connection or was stopped). A file that a
/// row refers to again (an upload reusing the path since) is left alone.
pub(super) async fn finish_left_over(
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    progress: &mut Progress,
) -> anyhow::Result<()> {
    // Each intent is inserted in the transaction that saves the checkpoint
    // counting it: a job whose checkpoint counts none has none.
    if progress.checkpoint.intents == 0 {
        return Ok(());
    }
    let left: Vec<(i64, Vec<i64>, Vec<String>)> =
        sqlx::query_as("SELECT batch, image_ids, paths FROM janitor_unlink_intents WHERE job_id = $1 ORDER BY batch")
            .bind(ctx.lease.job_id)
            .fetch_all(ctx.pool)
            .await?;
    let mut done = Vec::with_capacity(left.len());
    for (batch, ids, paths) in left {
        let files = unreferenced(ctx.pool, ids, paths).await?;
        // No lock covers the lookup in `unreferenced` and this unlink: none
        // stands for "no row names this path", as the application takes none
        // when it inserts a row. The intent's own rows are deleted and
        // committed, so no task can reference them; but a row committed
        // after the lookup that names one of these paths (an upload reusing
        // it) finds its file gone. What stands there is that paths are
        // unique per upload (docs/OPERATIONS.md, "What still holds").
        done.push(unlink(ctx, Intent { batch, files, operation: selector.operation }).await);
    }
    if done.is_empty() {
        return Ok(());
    }
    tracing::info!(batches = done.len(), "finished unlinking the files of batches an earlier run committed");
    confirm(ctx, progress, done).await
}

/// Of a committed intent's files (`image_ids` and `paths` as recorded), those
/// still to be unlinked: every one that no row refers to again (an upload
/// may have reused the path since the rows were deleted), by the one
/// normalisation of stored paths. Used by the job's own rerun and by the
/// prune of a finished job's left-over intents.
pub(crate) async fn unreferenced(
    db: &PgPool,
    image_ids: Vec<i64>,
    paths: Vec<String>,
) -> sqlx::Result<Vec<(i64, RelativePath)>> {
    let refs: Vec<&str> = paths.iter().map(String::as_str).collect();
    let taken = crate::jobs::references::referenced(db, &refs).await?;
    Ok(image_ids
        .into_iter()
        .zip(paths)
        .filter(|(_, path)| !taken.contains(path))
        .filter_map(|(id, path)| RelativePath::parse(&path).ok().map(|path| (id, path)))
        .collect())
}

/// Carries out the intents of a job that has ended: it ended in its last
/// batch's transaction and stopped (a crash, a kill) before it unlinked
/// that batch's files. A redelivery of the job comes here, so the files go
/// as soon as the queue hands the entry out again (prune does the same for
/// any intent still left, `prune::spills`). A file that cannot be unlinked
/// becomes an error item of the job, as it would have in its own run.
/// Returns the job's row if it changed.
pub(crate) async fn finish_for_ended(
    pool: &PgPool,
    storage: &Storage,
    settings: &EngineSettings,
    record: &JobRecord,
) -> anyhow::Result<Option<JobRecord>> {
    let left: Vec<(i64, Vec<i64>, Vec<String>)> =
        sqlx::query_as("SELECT batch, image_ids, paths FROM janitor_unlink_intents WHERE job_id = $1 ORDER BY batch")
            .bind(record.job_id)
            .fetch_all(pool)
            .await?;
    if left.is_empty() {
        return Ok(None);
    }
    let (mut batches, mut errors) = (Vec::new(), Vec::new());
    for (batch, ids, paths) in left {
        let files = unreferenced(pool, ids, paths).await?;
        // No lock covers the lookup in `unreferenced` and this unlink, as in
        // `finish_left_over` above: the intent's rows are deleted and
        // committed, and paths are unique per upload.
        errors.extend(remove(storage, settings.unlink_concurrency, files, &record.operation).await);
        batches.push(batch);
    }
    tracing::info!(job_id = %record.job_id, batches = batches.len(), "unlinked the files an ended job's last batch left");
    let listed = record.errors.as_array().map_or(0, Vec::len);
    Ok(crate::results::settle_left_over(
        pool,
        record.job_id,
        &batches,
        &errors,
        settings.error_cap.saturating_sub(listed),
    )
    .await?)
}
