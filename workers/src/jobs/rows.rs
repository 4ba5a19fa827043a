//! The batch loop shared by the operations that delete image rows with their
//! files (expired, session, old results).
//!
//! One batch is one transaction:
//!
//! 1. Page the next candidate ids after the cursor (no locks).
//! 2. Lock those rows `FOR UPDATE SKIP LOCKED`, re-checking the condition.
//!    `SKIP LOCKED` lets concurrent runs of the same operation share the work:
//!    a row another run holds is simply theirs. It also skips a row whose
//!    task insert is in flight (the insert's foreign-key check holds
//!    `FOR KEY SHARE` on it).
//! 3. In a *fresh statement*, look for pending or processing tasks that use
//!    any locked row. Why this order is safe: under READ COMMITTED each
//!    statement sees everything committed before it began. A task that
//!    references a locked image either committed before step 2 (so step 3
//!    sees it and we skip the image), or was mid-insert at step 2 (so its
//!    foreign-key lock made `SKIP LOCKED` pass over the image), or starts
//!    after step 2 (so its foreign-key check waits for our lock and, once we
//!    commit the delete, fails cleanly instead of referencing a gone image).
//! 4. Unlink the files of the rows that are free (in parallel), then delete
//!    the rows whose file is gone (unlinked now, or already missing). A file
//!    that cannot be unlinked keeps its row and becomes an error item.
//! 5. Save counters, error items and the cursor in the same transaction,
//!    fenced by the lease epoch, and commit.
//!
//! A crash between 4 and 5 rolls the row deletions back while the files are
//! already gone; the rerun claims the same rows, finds their files missing,
//! and deletes and counts them then. So counts stay exact and, once the job
//! has finished, no remaining row lacks its file and no deleted row's file
//! remains. (The reverse order, rows first, leaks files on a crash.)

use std::collections::HashSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use tokio::sync::mpsc;

use super::PhaseEnd;
use crate::engine::RunContext;
use crate::progress::{Counters, Cursor, ErrorItem, Progress};
use crate::storage::{RelativePath, Removal};

/// How one operation picks its candidate rows.
#[derive(Debug, Clone)]
pub(crate) struct RowSelector {
    pub operation: &'static str,
    /// `$1` cursor (last id done), `$2` batch size, `$3` the argument.
    /// Returns candidate ids in ascending order.
    pub next_ids: &'static str,
    /// `$1` the candidate ids, `$2` the argument. Returns
    /// `(id, storage_path, file_size)` of those that still qualify.
    pub claim: &'static str,
    pub arg: ClaimArg,
}

#[derive(Debug, Clone)]
pub(crate) enum ClaimArg {
    Time(DateTime<Utc>),
    Text(String),
}

/// How long a phase waits at its end for rows other transactions held.
const RECHECK_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, sqlx::FromRow)]
struct Candidate {
    id: i64,
    storage_path: String,
    file_size: i64,
}

/// Images among `ids` that a pending or processing task uses, through any
/// of the four image columns. Each `= ANY` is served by its column's index.
const IN_USE: &str = "SELECT DISTINCT used.id FROM face_swap_tasks t
    CROSS JOIN LATERAL unnest(ARRAY[t.husband_photo_id, t.wife_photo_id, t.template_id, t.result_image_id]) AS used(id)
    WHERE t.status IN ('pending', 'processing')
      AND (t.husband_photo_id = ANY($1) OR t.wife_photo_id = ANY($1)
           OR t.template_id = ANY($1) OR t.result_image_id = ANY($1))
      AND used.id = ANY($1)";

pub(crate) async fn run(
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    progress: &mut Progress,
) -> anyhow::Result<PhaseEnd> {
    // Batches flow through three stages that run at once, so database work
    // overlaps file deletion instead of adding to it: the pager claims the
    // next batch while the unlinker deletes the files of the one before, and
    // the committer deletes the rows of the one before that and commits.
    // The unlinker never waits on the database while a claimed batch is
    // ready. Batches commit one after the other, in cursor order, so the
    // checkpoint only moves forward. A crash can leave a batch with its files
    // unlinked and its rows uncommitted: the rerun claims those rows again,
    // finds their files missing, and deletes and counts them.
    let halt = ctx.control.cancel.child_token();
    let (to_unlink, mut claimed) = mpsc::channel::<Prepared>(1);
    let (to_commit, mut unlinked) = mpsc::channel::<(Prepared, Vec<Removal>)>(1);
    let pager = {
        let halt = halt.clone();
        let mut after = cursor(progress);
        async move {
            // The slot is taken before the claim, so at most one claimed
            // batch waits for the unlinker.
            while let Ok(slot) = to_unlink.reserve().await {
                if halt.is_cancelled() {
                    break;
                }
                let Some(prepared) = prepare(ctx, selector, after).await? else { break };
                after = prepared.last;
                slot.send(prepared);
            }
            anyhow::Ok(())
        }
    };
    let unlinker = {
        let halt = halt.clone();
        // The most the job may still delete under its limit.
        let mut budget = ctx.remaining(progress);
        async move {
            while let Some(mut prepared) = claimed.recv().await {
                if halt.is_cancelled() || budget == Some(0) {
                    break;
                }
                if let Some(left) = budget.as_mut() {
                    prepared.claimed.free.truncate(usize::try_from(*left).unwrap_or(usize::MAX));
                    *left -= prepared.claimed.free.len() as u64;
                }
                let removals = unlink(ctx, &prepared.claimed).await;
                if to_commit.send((prepared, removals)).await.is_err() {
                    break;
                }
            }
        }
    };
    let committer = {
        let halt = halt.clone();
        let progress = &mut *progress;
        // Owning its receiver, the committer closes it when it stops, which
        // stops the stages before it.
        async move {
            while let Some(batch) = unlinked.recv().await {
                if let Err(err) = commit(ctx, selector, progress, batch).await {
                    halt.cancel();
                    return Err(err);
                }
            }
            anyhow::Ok(())
        }
    };
    let (paged, (), committed) = tokio::join!(
        async {
            let paged = pager.await;
            if paged.is_err() {
                halt.cancel();
            }
            paged
        },
        unlinker,
        committer
    );
    committed?;
    paged?;
    if ctx.control.cancel.is_cancelled() {
        return Ok(PhaseEnd::Interrupted);
    }
    if ctx.remaining(progress) == Some(0) {
        return Ok(PhaseEnd::Done);
    }
    recheck(ctx, selector, progress).await
}

/// Deletes a batch's rows, records its counts and cursor, and commits.
async fn commit(
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    progress: &mut Progress,
    (prepared, removals): (Prepared, Vec<Removal>),
) -> anyhow::Result<()> {
    let Prepared { mut tx, last, claimed, started } = prepared;
    let done = settle(ctx, &mut tx, selector, claimed, removals).await?;
    let mut next = progress.clone();
    next.record(done.delta, done.errors, Cursor::AfterId(last));
    next.defer(done.unclaimed);
    next.observe(started.elapsed());
    crate::results::save_progress(&mut tx, ctx.lease, &next).await?;
    tx.commit().await?;
    *progress = next;
    ctx.batch_done(progress, started.elapsed());
    Ok(())
}

fn cursor(progress: &Progress) -> i64 {
    match progress.checkpoint.cursor {
        Cursor::AfterId(id) => id,
        _ => 0,
    }
}

/// A batch claimed in its own open transaction, not yet acted on.
struct Prepared {
    tx: sqlx::Transaction<'static, sqlx::Postgres>,
    last: i64,
    claimed: Claimed,
    started: std::time::Instant,
}

/// Steps 1 to 3: the next page after `after`, claimed. `None` at the end.
async fn prepare(ctx: &RunContext<'_>, selector: &RowSelector, after: i64) -> anyhow::Result<Option<Prepared>> {
    let started = std::time::Instant::now();
    let mut tx = ctx.engine.pool.begin().await?;
    // A batch's commit need not wait for its WAL flush: if Postgres or the
    // machine crashes and loses the last commits, their rows come back
    // with their files already gone, together with the job's checkpoint
    // from before them; that is the state a crash between unlink and commit
    // leaves, and the rerun heals it (claims the rows, finds the files
    // missing, deletes and counts them). It saves a disk flush per batch.
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    let ids = next_ids(&mut tx, selector, after, ctx.engine.settings.batch_size).await?;
    let Some(&last) = ids.last() else {
        tx.rollback().await?;
        return Ok(None);
    };
    let claimed = claim(ctx, &mut tx, selector, &ids).await?;
    Ok(Some(Prepared { tx, last, claimed, started }))
}

/// The end-of-phase pass over rows that other transactions held when their
/// batch came. Waits for them with a growing pause, up to [`RECHECK_WAIT`]:
/// another run's batch commits in moments; a paused worker's transaction ends
/// when it resumes (its commit then fails on its lost lease) or when
/// Postgres's `idle_in_transaction_session_timeout` ends its session.
async fn recheck(ctx: &RunContext<'_>, selector: &RowSelector, progress: &mut Progress) -> anyhow::Result<PhaseEnd> {
    let deadline = std::time::Instant::now() + RECHECK_WAIT;
    let mut pause = Duration::from_millis(50);
    while !progress.checkpoint.recheck.is_empty() {
        if ctx.control.cancel.is_cancelled() {
            return Ok(PhaseEnd::Interrupted);
        }
        let started = std::time::Instant::now();
        let ids = progress.checkpoint.recheck.clone();
        let mut tx = ctx.engine.pool.begin().await?;
        let claimed = claim(ctx, &mut tx, selector, &ids).await?;
        let removals = unlink(ctx, &claimed).await;
        let done = settle(ctx, &mut tx, selector, claimed, removals).await?;
        // Of the rows still not claimed, keep those that still qualify.
        let still = candidates(&mut tx, selector, &done.unclaimed, false).await?;
        let mut next = progress.clone();
        let cursor = next.checkpoint.cursor.clone();
        next.record(done.delta, done.errors, cursor);
        next.checkpoint.recheck = still.iter().map(|c| c.id).collect();
        if std::time::Instant::now() >= deadline && !next.checkpoint.recheck.is_empty() {
            tracing::warn!(
                rows = next.checkpoint.recheck.len(),
                "rows still held by other transactions; leaving them to a later run"
            );
            next.checkpoint.recheck.clear();
        }
        crate::results::save_progress(&mut tx, ctx.lease, &next).await?;
        tx.commit().await?;
        *progress = next;
        ctx.batch_done(progress, started.elapsed());
        if !progress.checkpoint.recheck.is_empty() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
    Ok(PhaseEnd::Done)
}

async fn next_ids(conn: &mut PgConnection, selector: &RowSelector, after: i64, limit: usize) -> sqlx::Result<Vec<i64>> {
    let query = sqlx::query_scalar(selector.next_ids).bind(after).bind(limit as i64);
    match &selector.arg {
        ClaimArg::Time(at) => query.bind(at).fetch_all(conn).await,
        ClaimArg::Text(text) => query.bind(text).fetch_all(conn).await,
    }
}

/// What one batch did.
struct BatchDone {
    delta: Counters,
    errors: Vec<ErrorItem>,
    /// Ids that were asked for but not claimed: held by another transaction,
    /// or no longer qualifying.
    unclaimed: Vec<i64>,
}

/// A claimed batch, sorted: the free rows with their validated paths, and
/// what was skipped or refused.
struct Claimed {
    free: Vec<(Candidate, RelativePath)>,
    skipped: i64,
    errors: Vec<ErrorItem>,
    unclaimed: Vec<i64>,
}

/// The candidates among `ids` that still qualify, locked unless in a dry run.
async fn candidates(
    conn: &mut PgConnection,
    selector: &RowSelector,
    ids: &[i64],
    lock: bool,
) -> sqlx::Result<Vec<Candidate>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = if lock { format!("{} FOR UPDATE SKIP LOCKED", selector.claim) } else { selector.claim.to_owned() };
    let query = sqlx::query_as::<_, Candidate>(&sql).bind(ids);
    match &selector.arg {
        ClaimArg::Time(at) => query.bind(at).fetch_all(conn).await,
        ClaimArg::Text(text) => query.bind(text).fetch_all(conn).await,
    }
}

fn error_item(selector: &RowSelector, candidate: &Candidate, message: String) -> ErrorItem {
    ErrorItem {
        image_id: Some(candidate.id),
        path: candidate.storage_path.clone(),
        error: message,
        operation: selector.operation.to_owned(),
    }
}

/// Steps 2 and 3: lock the rows, then find the ones active tasks use.
async fn claim(
    ctx: &RunContext<'_>,
    conn: &mut PgConnection,
    selector: &RowSelector,
    ids: &[i64],
) -> anyhow::Result<Claimed> {
    // A dry run takes no locks: it must not hold up the application.
    let candidates = candidates(&mut *conn, selector, ids, !ctx.dry_run).await?;
    let claimed: Vec<i64> = candidates.iter().map(|c| c.id).collect();
    let in_use: HashSet<i64> =
        sqlx::query_scalar(IN_USE).bind(&claimed).fetch_all(&mut *conn).await?.into_iter().collect();
    let claimed: HashSet<i64> = claimed.into_iter().collect();
    let unclaimed = ids.iter().copied().filter(|id| !claimed.contains(id)).collect();
    let mut sorted = Claimed { free: Vec::new(), skipped: 0, errors: Vec::new(), unclaimed };
    for candidate in candidates {
        if in_use.contains(&candidate.id) {
            sorted.skipped += 1;
            continue;
        }
        match RelativePath::parse(&candidate.storage_path) {
            Ok(path) => sorted.free.push((candidate, path)),
            Err(err) => sorted.errors.push(error_item(selector, &candidate, err.to_string())),
        }
    }
    Ok(sorted)
}

/// Step 4, the files: unlinks the free rows' files (none in a dry run).
async fn unlink(ctx: &RunContext<'_>, claimed: &Claimed) -> Vec<Removal> {
    if ctx.dry_run {
        return vec![Removal::Removed; claimed.free.len()];
    }
    ctx.pace(claimed.free.len()).await;
    let paths = claimed.free.iter().map(|(_, path)| path.clone()).collect();
    ctx.storage.remove_many(paths, ctx.engine.settings.unlink_concurrency).await
}

/// Step 4, the rows: deletes those whose file is gone; a file that could not
/// be unlinked keeps its row and becomes an error item.
async fn settle(
    ctx: &RunContext<'_>,
    conn: &mut PgConnection,
    selector: &RowSelector,
    claimed: Claimed,
    removals: Vec<Removal>,
) -> anyhow::Result<BatchDone> {
    let Claimed { free, skipped, mut errors, unclaimed } = claimed;
    let mut gone = Vec::with_capacity(free.len());
    for ((candidate, _), removal) in free.into_iter().zip(removals) {
        match removal {
            Removal::Removed | Removal::Missing => gone.push(candidate),
            Removal::Failed(message) => errors.push(error_item(selector, &candidate, message)),
        }
    }
    if !ctx.dry_run {
        let gone_ids: Vec<i64> = gone.iter().map(|c| c.id).collect();
        sqlx::query("DELETE FROM images WHERE id = ANY($1)").bind(&gone_ids).execute(&mut *conn).await?;
    }
    let delta = Counters {
        deleted: gone.len() as i64,
        bytes: gone.iter().map(|c| c.file_size).sum(),
        skipped,
        errors: errors.len() as i64,
    };
    Ok(BatchDone { delta, errors, unclaimed })
}
