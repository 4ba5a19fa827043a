//! `cleanup_orphaned_files`: files under the category folders that no row
//! refers to, under any spelling of its path (see `jobs/references`), and
//! that are older than a grace period (the application writes a file before
//! it commits the row that refers to it).
//!
//! # One walk, then the deletions
//! 1. [`guards`] refuse a sweep that could misread the store.
//! 2. [`walk`]: one pass over the store, merged with the stored paths (no
//!    query per file), counting every file; the files no row refers to and
//!    past the grace period are spilled as candidates. Resumable.
//! 3. Only a complete walk decides: the ratio guard on its census.
//! 4. [`sweep`]: the candidates, batch by batch: re-checked, moved to the
//!    job's trash, checked again, moved back if a row now refers to them.
//!
//! # Why a file a row refers to is never taken
//! - **The grace period** is the wall between the sweep and files the
//!   application is creating: their age is the newer of mtime and ctime, so
//!   a file copied in with an old mtime is young. The grace period has a
//!   floor (`min_grace`).
//! - **One normalisation**: a row refers to a file by its key, the same one
//!   row operations use; a row whose path has no safe key refuses the sweep.
//! - **Checks before and after the move**: a row committed during the sweep
//!   protects its file before the move, or brings it back after it. No lock
//!   can cover "no row refers to this path" (the application takes none),
//!   so the file is moved, not unlinked, while that is checked.
//!
//! Memory stays bounded: the walk holds one folder listing per level, the
//! streams a page of keys each, and the candidates live in the spill.

mod guards;
mod keys;
mod sweep;
mod walk;

use std::time::{Duration, SystemTime};

use super::PhaseEnd;
use crate::jobs::context::RunContext;
use crate::progress::{Counters, ErrorItem, Progress};

pub const OPERATION: &str = "cleanup_orphaned_files";

pub(crate) async fn run(ctx: &RunContext<'_>, min_age: Duration, progress: &mut Progress) -> anyhow::Result<PhaseEnd> {
    if let Some(reason) = guards::refusal(ctx, min_age).await? {
        return Ok(PhaseEnd::Refused(reason));
    }
    // One sweep per storage root at a time; held until this phase returns.
    let Some(mut lock) = guards::sweep_lock(ctx).await? else {
        return Ok(PhaseEnd::Skipped(format!(
            "another orphan sweep of {} is running; skipped",
            ctx.storage.root().display()
        )));
    };
    let end = locked(ctx, min_age, progress, &mut lock).await;
    lock.release().await;
    end
}

/// The sweep, under the root's lock.
async fn locked(
    ctx: &RunContext<'_>,
    min_age: Duration,
    progress: &mut Progress,
    lock: &mut guards::SweepLock,
) -> anyhow::Result<PhaseEnd> {
    let grace_ends = grace_ends(progress, min_age);
    if progress.checkpoint.census.is_none() {
        if let walk::Walked::Interrupted = walk::run(ctx, grace_ends, progress).await? {
            return Ok(PhaseEnd::Interrupted);
        }
    }
    let Some(census) = progress.checkpoint.census else {
        anyhow::bail!("the orphan walk ended without a census");
    };
    if let Some(reason) = guards::too_many(ctx, census) {
        if ctx.dry_run {
            let note = error_item("", format!("a real run would refuse: {reason}"));
            progress.add(Counters { errors: 1, ..Counters::default() }, vec![note]);
            save(ctx, progress).await?;
            return Ok(PhaseEnd::Done);
        }
        // A retry of the refused job walks again (the store may be fixed).
        progress.checkpoint.census = None;
        save(ctx, progress).await?;
        drop_spill(ctx).await?;
        return Ok(PhaseEnd::Refused(reason));
    }
    if ctx.dry_run {
        return Ok(PhaseEnd::Done);
    }
    // Rows written during the walk may hold paths with no safe key.
    if let Some(reason) = guards::unsafe_paths(ctx).await? {
        return Ok(PhaseEnd::Refused(reason));
    }
    let end = sweep::run(ctx, grace_ends, progress, lock).await?;
    if matches!(end, PhaseEnd::Done) {
        drop_spill(ctx).await?;
    }
    if !ctx.settings.quarantine {
        // The files passed through the trash and were unlinked there; their
        // emptied folders go too.
        if let Err(why) = ctx.storage.prune_trash(ctx.lease.job_id) {
            tracing::warn!(%why, "could not remove the job's empty trash folders");
        }
    }
    Ok(end)
}

/// Files whose newer of mtime and ctime is before this are past the grace
/// period. The job's reference time is the database's clock; the earlier of
/// it and this machine's clock is taken, so that a clock running ahead
/// never makes files look older than they are.
fn grace_ends(progress: &Progress, min_age: Duration) -> SystemTime {
    let now = SystemTime::from(progress.checkpoint.as_of).min(SystemTime::now());
    now.checked_sub(min_age).unwrap_or(SystemTime::UNIX_EPOCH)
}

/// Forgets this job's spilled candidates.
async fn drop_spill(ctx: &RunContext<'_>) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM janitor_orphan_candidates WHERE job_id = $1")
        .bind(ctx.lease.job_id)
        .execute(ctx.pool)
        .await?;
    Ok(())
}

async fn save(ctx: &RunContext<'_>, progress: &Progress) -> anyhow::Result<()> {
    let mut conn = ctx.pool.acquire().await?;
    crate::results::save_progress(&mut conn, ctx.lease, progress).await?;
    Ok(())
}

fn error_item(path: &str, error: String) -> ErrorItem {
    ErrorItem { image_id: None, path: path.to_owned(), error, operation: OPERATION.to_owned() }
}
