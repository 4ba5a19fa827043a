//! The batch loop shared by the operations that delete image rows with their
//! files (expired, session, old results).
//!
//! # One batch
//! 1. **Page**, with no transaction and no lock: the next candidate ids
//!    after the cursor, with their paths, and a look at each file through
//!    the storage wall (`Storage::inspect_many`), so that a file which
//!    plainly cannot be unlinked keeps its row.
//! 2. **Wait**, still holding nothing: for the deletion budget (the pacer, a
//!    token bucket) and for room at the unlinker (back-pressure).
//! 3. **Decide and delete**, in one transaction ([`batch`]): lock the rows
//!    `FOR UPDATE SKIP LOCKED`, re-checking their condition; lock every task
//!    that references any of them `FOR SHARE SKIP LOCKED`; decide each row
//!    from those locked tasks; keep the rows whose file another remaining
//!    row refers to; delete the rest, record their files as an unlink
//!    intent, save counters and cursor fenced by the lease epoch; commit.
//! 4. **Unlink** the files after the commit ([`intents`]); a later batch's
//!    transaction drops the intent. A job of this phase alone ends in the
//!    transaction of the batch that leaves it nothing to do
//!    (`results::finish_in`); `results::settle_ended` then drops that last
//!    intent and tells the listeners.
//!
//! # Why no file of an image in use is ever unlinked
//! The decision (no pending or processing task uses the image) and the
//! action it guards (deleting the image's row) happen in one transaction
//! under row locks, so they stand or fall together:
//! - A task cannot start to use a locked image: its foreign-key check takes
//!   `FOR KEY SHARE` on the image, which waits for our `FOR UPDATE` and then
//!   fails once the delete commits. A task insert already in flight holds
//!   that lock first, and `SKIP LOCKED` passes over the image.
//! - A task that already references the image cannot change its status or
//!   its image columns: our `FOR SHARE` on it makes the application's
//!   `UPDATE` wait for our commit. A task the application is updating right
//!   now is skipped by `SKIP LOCKED`, and its images are tried again later.
//! - If the transaction dies before it commits (a lost connection, a killed
//!   session, `idle_in_transaction_session_timeout` while the process was
//!   stopped, a lost lease), nothing was deleted and no file was touched.
//!
//! A file is unlinked only after the commit that deleted its row. By then
//! no task can reference the row (the foreign key forbids a reference to a
//! deleted image), so the unlink needs no lock that could expire: pacing,
//! back-pressure, slow unlinks and a stopped process all happen either before
//! any lock is taken or after the decision is durable. Batch commits are
//! synchronous, so a crash of Postgres cannot bring a row back after its
//! file is gone. A crash between the commit and the unlinks leaves the
//! intent: the rerun unlinks those files first. So every file is always
//! referenced by a row, listed in an intent, or an orphan for the sweep; no
//! row is ever left without its file.

mod batch;
mod intents;
mod pager;

use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;

use super::PhaseEnd;
use crate::jobs::context::RunContext;
use crate::progress::{Cursor, Progress};
use crate::results::JobRecord;
pub(crate) use batch::TaskRule;
pub(crate) use intents::{finish_for_ended, unreferenced};
use intents::{Intent, Unlinked};
use pager::Page;

/// How one operation picks its candidate rows.
#[derive(Debug, Clone)]
pub(crate) struct RowSelector {
    pub operation: &'static str,
    /// `$1` cursor (last id done), `$2` page size, `$3` the argument.
    /// Returns `(id, storage_path)` of candidates in ascending id order.
    pub page: &'static str,
    /// Whether `page` returns a row for every candidate its `LIMIT` counted,
    /// so that a page shorter than the limit is the last one.
    pub short_page_is_last: bool,
    /// `$1` the candidate ids, `$2` the argument. Returns
    /// `(id, storage_path, file_size)` of those that still qualify.
    pub claim: &'static str,
    pub arg: ClaimArg,
    /// What the tasks that use a row allow.
    pub rule: TaskRule,
}

#[derive(Debug, Clone)]
pub(crate) enum ClaimArg {
    Time(DateTime<Utc>),
    Text(String),
}

/// How long a phase waits at its end for rows other transactions held.
const RECHECK_WAIT: Duration = Duration::from_secs(60);

pub(crate) async fn run(
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    progress: &mut Progress,
) -> anyhow::Result<PhaseEnd> {
    if ctx.dry_run {
        // A real run's deletes would refuse (see `batch::DELETE`); so does
        // the dry run that stands for it.
        let problem: Option<String> =
            sqlx::query_scalar("SELECT janitor_task_keys_problem()").fetch_one(ctx.pool).await?;
        if let Some(problem) = problem {
            return Ok(PhaseEnd::Refused(format!("refusing to delete image rows: {problem}")));
        }
    }
    // Files whose rows an earlier run of this job deleted go first.
    intents::finish_left_over(ctx, selector, progress).await?;
    let pipeline = pipeline(ctx, selector, progress).await;
    if let Some(reason) = pipeline.as_ref().err().and_then(missing_task_keys) {
        return Ok(PhaseEnd::Refused(reason));
    }
    if let Some(record) = pipeline? {
        // The last batch ended the job (and told the listeners, in a dry
        // run); the files a real run committed are unlinked now.
        if ctx.dry_run {
            return Ok(PhaseEnd::Ended(Box::new(record)));
        }
        let record = match crate::results::settle_ended(ctx.pool, ctx.lease, progress, record.clone()).await {
            Ok(settled) => settled,
            // The end is durable: what is left is the intents, which the
            // job's redelivery or prune carries out.
            Err(err) => {
                tracing::warn!(error = %err, "the job ended, but its unlinked files could not be recorded yet");
                record
            }
        };
        return Ok(PhaseEnd::Ended(Box::new(record)));
    }
    if ctx.cancel.is_cancelled() {
        // A stopped job records its last unlinks now rather than leave them
        // for a rerun to carry out again, after a delay in which a path may
        // be reused.
        if !progress.settled.is_empty() {
            intents::confirm(ctx, progress, Vec::new()).await?;
        }
        return Ok(PhaseEnd::Interrupted);
    }
    if ctx.remaining(progress) == Some(0) {
        return Ok(PhaseEnd::Done);
    }
    recheck(ctx, selector, progress).await
}

/// The refusal, if a batch's delete found a foreign key from the tasks to
/// the images missing (`JN001`, raised by `janitor_require_task_keys`).
/// Nothing of that batch was deleted: its transaction rolled back.
fn missing_task_keys(err: &anyhow::Error) -> Option<String> {
    let db = err.downcast_ref::<sqlx::Error>()?.as_database_error()?;
    if db.code().as_deref() != Some("JN001") {
        return None;
    }
    let hint = db.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().and_then(|pg| pg.hint());
    Some(match hint {
        Some(hint) => format!("{} ({hint})", db.message()),
        None => db.message().to_owned(),
    })
}

/// Pages, decides and unlinks at once, on consecutive batches: the pager
/// reads the next page while the committer decides the one before and the
/// unlinker removes the files of the one before that. The committer waits
/// for room at the unlinker and for the pacer before it opens its
/// transaction, never while it holds locks. Returns the job's end if its
/// last batch ended it.
async fn pipeline(
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    progress: &mut Progress,
) -> anyhow::Result<Option<JobRecord>> {
    let halt = ctx.cancel.child_token();
    let (to_commit, mut pages) = mpsc::channel::<Page>(1);
    let (to_unlink, mut intents) = mpsc::channel::<Intent>(1);
    let (unlinked_tx, mut unlinked) = mpsc::unbounded_channel::<Unlinked>();
    let page_size = ctx.page_size();
    let pager = pager::run(ctx, selector, cursor(progress), page_size, to_commit, halt.clone());
    let unlinker = async move {
        while let Some(intent) = intents.recv().await {
            let _ = unlinked_tx.send(intents::unlink(ctx, intent).await);
        }
    };
    let committer = {
        let progress = &mut *progress;
        let halt = halt.clone();
        async move {
            let result = async {
                while let Some(page) = pages.recv().await {
                    // Back-pressure and pacing, before any lock is taken.
                    let Ok(slot) = to_unlink.reserve().await else { break };
                    if halt.is_cancelled() || ctx.remaining(progress) == Some(0) {
                        break;
                    }
                    ctx.pace(page.ids.len()).await;
                    let done = drain(&mut unlinked);
                    let committed = batch::commit(ctx, selector, progress, &page, done).await?;
                    if let Some(intent) = committed.intent {
                        slot.send(intent);
                    }
                    if committed.ended.is_some() {
                        return Ok(committed.ended);
                    }
                }
                anyhow::Ok(None)
            }
            .await;
            // Stops the pager whether this ended well or not.
            halt.cancel();
            drop(to_unlink);
            (result, unlinked)
        }
    };
    let (paged, (), (committed, mut unlinked)) = tokio::join!(pager, unlinker, committer);
    let ended = committed?;
    paged?;
    // Every intent this run committed has been unlinked: the job's next
    // save (the next phase's, or its end) records that. If the run stops
    // before, the intents stay, and its rerun finishes them first.
    intents::settle(progress, &drain(&mut unlinked));
    Ok(ended)
}

fn drain(unlinked: &mut mpsc::UnboundedReceiver<Unlinked>) -> Vec<Unlinked> {
    std::iter::from_fn(|| unlinked.try_recv().ok()).collect()
}

fn cursor(progress: &Progress) -> i64 {
    match progress.checkpoint.cursor {
        Cursor::AfterId(id) => id,
        _ => 0,
    }
}

/// The end-of-phase pass over rows that were passed over because another
/// transaction held them (or a task that uses them). Waits for them with a
/// growing pause, up to [`RECHECK_WAIT`]: another run's batch commits in
/// moments; a paused worker's transaction ends when it resumes or when
/// Postgres's `idle_in_transaction_session_timeout` ends its session.
async fn recheck(ctx: &RunContext<'_>, selector: &RowSelector, progress: &mut Progress) -> anyhow::Result<PhaseEnd> {
    let deadline = std::time::Instant::now() + RECHECK_WAIT;
    let mut pause = Duration::from_millis(50);
    while !progress.checkpoint.recheck.is_empty() {
        if ctx.cancel.is_cancelled() {
            return Ok(PhaseEnd::Interrupted);
        }
        if std::time::Instant::now() >= deadline {
            tracing::warn!(
                rows = progress.checkpoint.recheck.len(),
                "rows still held by other transactions; leaving them to a later run"
            );
            progress.checkpoint.recheck.clear();
            intents::confirm(ctx, progress, Vec::new()).await?;
            break;
        }
        let ids = std::mem::take(&mut progress.checkpoint.recheck);
        for chunk in ids.chunks(ctx.settings.batch_size) {
            let page = pager::fetch(ctx, chunk).await?;
            ctx.pace(page.ids.len()).await;
            let committed = batch::commit(ctx, selector, progress, &page, Vec::new()).await?;
            let done = match committed.intent {
                Some(intent) => vec![intents::unlink(ctx, intent).await],
                None => Vec::new(),
            };
            intents::confirm(ctx, progress, done).await?;
        }
        if !progress.checkpoint.recheck.is_empty() {
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }
    Ok(PhaseEnd::Done)
}
