//! The sweep's one walk over the store: it counts every file, merges the
//! walk with the stored paths, stats only the files no row refers to, and
//! spills those past the grace period into `janitor_orphan_candidates`.
//!
//! A blocking thread walks and merges; this task writes each batch's
//! candidates and the walk's checkpoint in one transaction. A resumed job
//! continues its walk if its spill is intact (the checkpoint's count of
//! candidates matches the table's), and walks again from the start if not.
//! The walk sets the census only once it has covered the whole store.

use std::time::SystemTime;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::keys::References;
use super::{error_item, save};
use crate::jobs::context::RunContext;
use crate::progress::{Census, Counters, ErrorItem, Progress, WalkState};
use crate::sample::SampleItem;
use crate::storage::{RelativePath, ScanItem, Storage};

/// How a walk ended.
pub(super) enum Walked {
    Complete,
    Interrupted,
}

/// One batch of the walk, as the thread hands it over.
#[derive(Default)]
struct Batch {
    files: u64,
    candidates: Vec<(String, i64)>,
    errors: Vec<ErrorItem>,
    cursor: String,
}

pub(super) async fn run(
    ctx: &RunContext<'_>,
    grace_ends: SystemTime,
    progress: &mut Progress,
) -> anyhow::Result<Walked> {
    let mut state = resumable(ctx, progress).await?;
    let (sender, mut batches) = mpsc::channel::<Batch>(2);
    let stop = ctx.cancel.child_token();
    let walker = {
        let references = References::start(ctx.pool, &state.cursor);
        let (storage, after) = (ctx.storage.clone(), state.cursor.clone());
        let (batch_size, stop) = (ctx.settings.batch_size, stop.clone());
        tokio::task::spawn_blocking(move || walk(&storage, references, &after, grace_ends, batch_size, &stop, &sender))
    };
    let written = async {
        while let Some(batch) = batches.recv().await {
            // A stop takes effect at the next batch: the ones the thread has
            // walked ahead are walked again on resume.
            if ctx.cancel.is_cancelled() {
                break;
            }
            record(ctx, progress, &mut state, batch).await?;
        }
        anyhow::Ok(())
    }
    .await;
    // Whatever happened, the thread is told to stop and waited for.
    stop.cancel();
    drop(batches);
    let walked = walker.await?;
    written?;
    walked?;
    if ctx.cancel.is_cancelled() {
        return Ok(Walked::Interrupted);
    }
    let mut next = progress.clone();
    let census = Census { files: state.files, candidates: state.candidates, bytes: state.bytes as u64 };
    next.add(Counters { errors: state.errors, ..Counters::default() }, std::mem::take(&mut state.error_items));
    next.checkpoint.walk = None;
    next.checkpoint.census = Some(census);
    next.checkpoint.files_scanned = census.files;
    save(ctx, &next).await?;
    *progress = next;
    Ok(Walked::Complete)
}

/// The walk to continue: the checkpoint's, if its spill is intact (a dry
/// run spills nothing), or a new one with the job's spill emptied.
async fn resumable(ctx: &RunContext<'_>, progress: &mut Progress) -> anyhow::Result<WalkState> {
    if let Some(state) = &progress.checkpoint.walk {
        let spilled: i64 = sqlx::query_scalar("SELECT count(*) FROM janitor_orphan_candidates WHERE job_id = $1")
            .bind(ctx.lease.job_id)
            .fetch_one(ctx.pool)
            .await?;
        if ctx.dry_run || spilled as u64 == state.candidates {
            tracing::info!(after = %state.cursor, files = state.files, "continuing the orphan walk");
            return Ok(state.clone());
        }
        tracing::warn!(spilled, counted = state.candidates, "the walk's spill was lost; walking again");
    }
    super::drop_spill(ctx).await?;
    if ctx.dry_run {
        // A dry run counts its candidates as it walks; a new walk starts
        // those counts (and its sample) again.
        let phase = progress.checkpoint.phase;
        progress.checkpoint.phases[phase] = Counters::default();
        progress.checkpoint.sample.forget(super::OPERATION);
    }
    Ok(WalkState::default())
}

/// Saves one batch: its candidates into the spill (none in a dry run, which
/// counts them instead) and the walk's state, in one transaction.
async fn record(
    ctx: &RunContext<'_>,
    progress: &mut Progress,
    state: &mut WalkState,
    batch: Batch,
) -> anyhow::Result<()> {
    let Batch { files, candidates, errors, cursor } = batch;
    let mut next = progress.clone();
    let mut tx = ctx.pool.begin().await?;
    // Losing this commit in a crash only means walking this batch again.
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    if ctx.dry_run {
        let bytes = candidates.iter().map(|(_, size)| size).sum();
        next.add(Counters { deleted: candidates.len() as i64, bytes, ..Counters::default() }, Vec::new());
        // The first orphans in path order, for the plan page; none is skipped.
        let sample = candidates.iter().map(|(path, size)| SampleItem::new(None, path).size(*size));
        next.checkpoint.sample.add(super::OPERATION, sample, Vec::new());
    } else if !candidates.is_empty() {
        let (paths, sizes): (Vec<String>, Vec<i64>) = candidates.iter().cloned().unzip();
        sqlx::query(
            "INSERT INTO janitor_orphan_candidates (job_id, path, size)
             SELECT $1, path, size FROM unnest($2::text[], $3::bigint[]) AS c(path, size)
             ON CONFLICT DO NOTHING",
        )
        .bind(ctx.lease.job_id)
        .bind(&paths)
        .bind(&sizes)
        .execute(&mut *tx)
        .await?;
    }
    let mut walked = state.clone();
    walked.cursor = cursor;
    walked.files += files;
    walked.candidates += candidates.len() as u64;
    walked.bytes += candidates.iter().map(|(_, size)| *size as u64).sum::<u64>();
    walked.errors += errors.len() as i64;
    let room = ctx.settings.error_cap.saturating_sub(walked.error_items.len());
    walked.error_items.extend(errors.into_iter().take(room));
    next.checkpoint.walk = Some(walked.clone());
    next.checkpoint.files_scanned = walked.files;
    crate::results::save_progress(&mut tx, ctx.lease, &next).await?;
    tx.commit().await?;
    *progress = next;
    *state = walked;
    ctx.batch_done(progress, std::time::Duration::ZERO);
    Ok(())
}

/// How many entries the walk covers at most between two checkpoints, in
/// batches: a checkpoint is one commit, and most entries of a healthy store
/// are referenced files that need nothing written.
const ENTRIES_PER_CHECKPOINT: usize = 32;

/// The longest the walk goes without a checkpoint (what a resumed walk
/// repeats at most, and how stale the row's progress gets).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(500);

/// The blocking side: walks after `after`, merging with the stored paths,
/// and hands over a batch once it holds `batch_size` candidates, has covered
/// [`ENTRIES_PER_CHECKPOINT`] × `batch_size` entries, or is
/// [`CHECKPOINT_EVERY`] old. Stops early, without handing over the batch
/// under way, when `stop` is cancelled.
fn walk(
    storage: &Storage,
    mut references: References,
    after: &str,
    grace_ends: SystemTime,
    batch_size: usize,
    stop: &CancellationToken,
    sender: &mpsc::Sender<Batch>,
) -> anyhow::Result<()> {
    let after = (!after.is_empty()).then_some(after);
    let mut batch = Batch::default();
    let mut seen = 0;
    let mut started = std::time::Instant::now();
    for item in storage.walk(after) {
        if stop.is_cancelled() {
            return Ok(());
        }
        batch.cursor = item.path().to_owned();
        seen += 1;
        match item {
            ScanItem::Error { path, error } => batch.errors.push(error_item(&path, error)),
            ScanItem::File(found) => {
                batch.files += 1;
                if let Err(err) = RelativePath::check(&found.path) {
                    let why = format!("no row can refer to this name safely ({err}); left alone");
                    batch.errors.push(error_item(&found.path, why));
                } else if !references.referenced(&found.path)? {
                    // Only a file no row refers to is stat'ed.
                    match found.stat() {
                        Ok(Some(stat)) if !stat.is_dir && stat.changed < grace_ends => {
                            batch.candidates.push((found.path, stat.size as i64));
                        }
                        Ok(_) => {}
                        Err(error) => batch.errors.push(error_item(&found.path, error)),
                    }
                }
            }
        }
        let full = batch.candidates.len() + batch.errors.len() >= batch_size
            || seen >= batch_size * ENTRIES_PER_CHECKPOINT
            || (seen % 256 == 0 && started.elapsed() >= CHECKPOINT_EVERY);
        if full {
            (seen, started) = (0, std::time::Instant::now());
            if sender.blocking_send(std::mem::take(&mut batch)).is_err() {
                return Ok(());
            }
        }
    }
    if seen > 0 {
        let _ = sender.blocking_send(batch);
    }
    Ok(())
}
