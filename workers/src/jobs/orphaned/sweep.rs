//! The sweep's deletions, after the complete walk and the ratio guard: the
//! spilled candidates in path order, a batch at a time.
//!
//! For each batch:
//! 1. **Re-check** against the rows: a row committed since the walk
//!    protects its file.
//! 2. **Re-stat** through the wall: still there, not a folder, and still
//!    older than the grace period by the newer of its mtime and ctime (a file
//!    replaced since the walk is young again).
//! 3. **Save** the batch as pending in the checkpoint, so that a crash after
//!    the moves still counts them.
//! 4. **Move** each file into the job's trash (`renameat2` with
//!    `RENAME_NOREPLACE`, through the wall), if it is still the file step 2
//!    judged (device, inode, mtime), checked before and after the rename.
//! 5. **Check again** after the move: a row committed between step 1 and the
//!    move refers to a file now in the trash; it is moved back (never over a
//!    file that took its place).
//! 6. With `--no-quarantine`, unlink the rest from the trash.
//! 7. Count them and move the cursor.

use std::time::SystemTime;

use super::guards::SweepLock;
use super::{error_item, save};
use crate::jobs::context::RunContext;
use crate::jobs::references::referenced;
use crate::jobs::PhaseEnd;
use crate::progress::{Counters, Cursor, ErrorItem, PendingOrphans, Progress};
use crate::storage::{FileIdentity, RelativePath, Removal, Unquarantine};

pub(super) async fn run(
    ctx: &RunContext<'_>,
    grace_ends: SystemTime,
    progress: &mut Progress,
    lock: &mut SweepLock,
) -> anyhow::Result<PhaseEnd> {
    if let Some(pending) = progress.checkpoint.pending.clone() {
        finish(ctx, progress, pending, true).await?;
    }
    loop {
        if ctx.cancel.is_cancelled() {
            return Ok(PhaseEnd::Interrupted);
        }
        let Some(size) = batch_size(ctx, progress) else { break };
        // Pacing waits before anything is read or moved.
        ctx.pace(size).await;
        // One sweep per root: checked before every batch, not only at start,
        // and after the pacing wait, so a lock lost during it is seen.
        lock.still_held().await?;
        let after = match &progress.checkpoint.cursor {
            Cursor::AfterPath(path) => path.clone(),
            _ => String::new(),
        };
        let batch: Vec<(String, i64)> = sqlx::query_as(
            "SELECT path, size FROM janitor_orphan_candidates WHERE job_id = $1 AND path > $2 ORDER BY path LIMIT $3",
        )
        .bind(ctx.lease.job_id)
        .bind(&after)
        .bind(size as i64)
        .fetch_all(ctx.pool)
        .await?;
        let Some((cursor, _)) = batch.last().cloned() else { break };
        let (judged, errors) = still_orphans(ctx, grace_ends, batch).await?;
        let (files, identities) = judged.into_iter().map(|(path, size, identity)| ((path, size), identity)).unzip();
        let pending = PendingOrphans { files, cursor, scanned: 0, identities };
        let mut next = progress.clone();
        let count = errors.len() as i64;
        next.add(Counters { errors: count, ..Counters::default() }, errors);
        next.checkpoint.pending = Some(pending.clone());
        save(ctx, &next).await?;
        *progress = next;
        finish(ctx, progress, pending, false).await?;
    }
    Ok(PhaseEnd::Done)
}

/// The next batch's size: the page size, within the job's limit; `None`
/// once the limit is reached.
fn batch_size(ctx: &RunContext<'_>, progress: &Progress) -> Option<usize> {
    let size = ctx.page_size();
    match ctx.remaining(progress) {
        Some(0) => None,
        Some(left) => Some(size.min(usize::try_from(left).unwrap_or(usize::MAX))),
        None => Some(size),
    }
}

/// Steps 1 and 2: the candidates that are still orphans, with their sizes
/// and identities now, and the ones that could not be looked at. Neither
/// check is held until the move (step 4): see there and at step 5.
async fn still_orphans(
    ctx: &RunContext<'_>,
    grace_ends: SystemTime,
    batch: Vec<(String, i64)>,
) -> anyhow::Result<(Vec<(String, u64, FileIdentity)>, Vec<ErrorItem>)> {
    let paths: Vec<&str> = batch.iter().map(|(path, _)| path.as_str()).collect();
    let taken = referenced(ctx.pool, &paths).await?;
    let free: Vec<RelativePath> = batch
        .iter()
        .filter(|(path, _)| !taken.contains(path))
        .filter_map(|(path, _)| RelativePath::parse(path).ok())
        .collect();
    let stats = ctx.storage.stat_many(free.clone()).await;
    let mut files = Vec::new();
    let mut errors = Vec::new();
    for (path, stat) in free.into_iter().zip(stats) {
        match stat {
            Ok(Some(stat)) if !stat.is_dir && stat.changed < grace_ends => {
                files.push((path.to_string(), stat.size, stat.identity))
            }
            // Gone, a folder now, or changed since the walk: not an orphan
            // to take now.
            Ok(_) => {}
            Err(error) => errors.push(error_item(path.as_str(), error)),
        }
    }
    Ok((files, errors))
}

/// Steps 4 to 7 for a pending batch. `resumed`: the batch was saved by a run
/// that stopped; a file it no longer finds is one that run moved if this
/// job's trash holds it (or, without quarantine, may have unlinked there).
async fn finish(
    ctx: &RunContext<'_>,
    progress: &mut Progress,
    pending: PendingOrphans,
    resumed: bool,
) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let job_id = ctx.lease.job_id;
    let concurrency = ctx.settings.unlink_concurrency;
    let identities = pending.identities.iter().copied().map(Some).chain(std::iter::repeat(None));
    let files: Vec<(RelativePath, u64, Option<FileIdentity>)> = pending
        .files
        .iter()
        .zip(identities)
        .filter_map(|((path, size), identity)| RelativePath::parse(path).ok().map(|p| (p, *size, identity)))
        .collect();
    let mut errors = Vec::new();
    // Step 4. Wall: quarantine_many resolves both folders beneath the root
    // fd with RESOLVE_NO_SYMLINKS and renames with RENAME_NOREPLACE.
    // No lock covers step 2's re-stat (not a folder, older than the grace
    // period) and this move. What covers them is the file's identity
    // (device, inode, mtime) taken at the re-stat: the move takes a file
    // only if it is still that one, checked before the rename and again
    // where it landed (moved back if another file took the name in
    // between). So a file written at an orphan's path since it was judged
    // (an upload reusing the path, even with an old mtime) stays where it
    // is, as an error item, in this run and in a rerun of a saved batch.
    let paths = files.iter().map(|(path, _, identity)| (path.clone(), *identity)).collect();
    let removals = ctx.storage.quarantine_many(paths, concurrency, job_id).await;
    let mut moved = Vec::new();
    let mut missing = Vec::new();
    for ((path, size, identity), removal) in files.into_iter().zip(removals) {
        match removal {
            Removal::Removed => moved.push((path, size)),
            Removal::Missing if resumed => missing.push((path, size, identity)),
            Removal::Missing => {}
            Removal::Failed(message) => errors.push(error_item(path.as_str(), message)),
        }
    }
    // A file of a saved batch that is gone from its path was moved by the
    // run that saved it only if it is in this job's trash: while that run
    // was dead its sweep lock was free, and another sweep may have taken the
    // file into its own trash (and counted it). Without quarantine, the run
    // may have unlinked it there too, which leaves no trace: such a file is
    // counted, as that run's.
    if !missing.is_empty() {
        let held = if ctx.settings.quarantine {
            let asked = missing.iter().map(|(path, _, identity)| (path.clone(), *identity)).collect();
            ctx.storage.quarantined_many(asked, job_id).await
        } else {
            vec![true; missing.len()]
        };
        moved.extend(missing.into_iter().zip(held).filter(|(_, held)| *held).map(|((path, size, _), _)| (path, size)));
    }
    // Step 5. The re-check of step 1 and the move are not under one lock (no
    // lock covers "no row refers to this path"): a row committed in between
    // finds its file here, in the trash, and it goes back. What stands
    // between the move back and the application is the grace period: a file
    // it is about to reference is younger than that, never a candidate.
    let names: Vec<&str> = moved.iter().map(|(path, _)| path.as_str()).collect();
    let taken = referenced(ctx.pool, &names).await?;
    let (back, gone): (Vec<_>, Vec<_>) = moved.into_iter().partition(|(path, _)| taken.contains(path.as_str()));
    let back_paths: Vec<RelativePath> = back.iter().map(|(path, _)| path.clone()).collect();
    for (path, outcome) in
        back_paths.iter().zip(ctx.storage.unquarantine_many(back_paths.clone(), concurrency, job_id).await)
    {
        match outcome {
            Unquarantine::Restored => {}
            // The run that saved the batch may have moved it back already.
            Unquarantine::Missing if resumed => {}
            // This run moved it a moment ago: its absence is worth a look.
            Unquarantine::Missing => errors.push(error_item(
                path.as_str(),
                "a row refers to it again, but it is no longer where this run moved it in the trash".to_owned(),
            )),
            Unquarantine::Conflict(why) | Unquarantine::Failed(why) => errors.push(error_item(
                path.as_str(),
                format!("a row refers to it again, but it could not be moved back ({why}); it is in the trash"),
            )),
        }
    }
    // Step 6.
    let mut deleted = gone;
    if !ctx.settings.quarantine {
        let paths: Vec<RelativePath> = deleted.iter().map(|(path, _)| path.clone()).collect();
        let purged = ctx.storage.purge_quarantined_many(paths, concurrency, job_id).await;
        let mut kept = Vec::with_capacity(deleted.len());
        for ((path, size), removal) in deleted.into_iter().zip(purged) {
            match removal {
                Removal::Removed | Removal::Missing => kept.push((path, size)),
                Removal::Failed(message) => errors.push(error_item(path.as_str(), message)),
            }
        }
        deleted = kept;
    }
    // Step 7.
    let delta = Counters {
        deleted: deleted.len() as i64,
        bytes: deleted.iter().map(|(_, size)| *size as i64).sum(),
        skipped: 0,
        errors: errors.len() as i64,
    };
    let mut next = progress.clone();
    next.record(delta, errors, Cursor::AfterPath(pending.cursor));
    next.checkpoint.pending = None;
    next.observe(started.elapsed());
    save(ctx, &next).await?;
    *progress = next;
    ctx.batch_done(progress, started.elapsed());
    Ok(())
}
