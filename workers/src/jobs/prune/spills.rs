//! The prune's first two kinds: what finished (or forgotten) jobs left in
//! the engine's working tables. An unlink intent is carried out before it
//! goes; orphan candidates are only a spill and just go.

use std::time::Instant;

use uuid::Uuid;

use super::{Pass, OPERATION};
use crate::jobs::PhaseEnd;
use crate::progress::{Counters, ErrorItem};
use crate::retention::spills::{self, Spill};
use crate::storage::Removal;

/// Finished jobs looked up at once.
const JOBS_PAGE: i64 = 100;

/// Unlink intents of finished jobs: their files first, then the intent.
pub(super) async fn intents(pass: &mut Pass<'_, '_>) -> anyhow::Result<PhaseEnd> {
    let (started, mut counted) = (Instant::now(), 0);
    let mut jobs = FinishedJobs::new(Spill::Intents);
    while let Some(page) = jobs.next(pass).await? {
        if pass.ctx.dry_run {
            counted += spills::count(pass.pool(), Spill::Intents, &page).await?;
            continue;
        }
        for job_id in page {
            if let PhaseEnd::Interrupted = settle_intents(pass, job_id).await? {
                return Ok(PhaseEnd::Interrupted);
            }
        }
    }
    if pass.ctx.dry_run {
        pass.record(counted, started).await?;
    }
    Ok(PhaseEnd::Done)
}

/// The orphan sweep's spill of finished jobs.
pub(super) async fn candidates(pass: &mut Pass<'_, '_>) -> anyhow::Result<PhaseEnd> {
    let (started, mut counted) = (Instant::now(), 0);
    let mut jobs = FinishedJobs::new(Spill::Candidates);
    while let Some(page) = jobs.next(pass).await? {
        if pass.ctx.dry_run {
            counted += spills::count(pass.pool(), Spill::Candidates, &page).await?;
            continue;
        }
        for job_id in page {
            let mut after = String::new();
            loop {
                if pass.stopped() {
                    return Ok(PhaseEnd::Interrupted);
                }
                let started = Instant::now();
                let mut tx = pass.pool().begin().await?;
                let removed = spills::delete_candidates(&mut tx, job_id, &mut after, pass.batch_size()).await?;
                if !pass.commit_removed(tx, removed, started).await? {
                    break;
                }
            }
        }
    }
    if pass.ctx.dry_run {
        pass.record(counted, started).await?;
    }
    Ok(PhaseEnd::Done)
}

/// The finished (or forgotten) jobs with rows in one spill table, page by
/// page in job id order.
struct FinishedJobs {
    spill: Spill,
    from: Option<Uuid>,
}

impl FinishedJobs {
    fn new(spill: Spill) -> Self {
        Self { spill, from: Some(Uuid::nil()) }
    }

    async fn next(&mut self, pass: &Pass<'_, '_>) -> anyhow::Result<Option<Vec<Uuid>>> {
        let Some(from) = self.from else { return Ok(None) };
        let page = spills::finished_jobs(pass.pool(), self.spill, from, JOBS_PAGE).await?;
        self.from = page.last().and_then(|last| spills::after(*last));
        Ok((!page.is_empty()).then_some(page))
    }
}

/// One finished job's intents, oldest first: unlinks each one's files
/// through the storage wall, but not those a row refers to again (as the
/// job's own rerun would), then deletes the intent with the counts: the
/// intent (`deleted`), files kept (`skipped`), files that could not be
/// unlinked (error items, left for the orphan sweep).
async fn settle_intents(pass: &mut Pass<'_, '_>, job_id: Uuid) -> anyhow::Result<PhaseEnd> {
    let mut after = i64::MIN;
    while let Some(intent) = spills::next_intent(pass.pool(), job_id, after).await? {
        if pass.stopped() {
            return Ok(PhaseEnd::Interrupted);
        }
        let started = Instant::now();
        after = intent.batch;
        let listed = intent.paths.len();
        let files = crate::jobs::rows::unreferenced(pass.pool(), intent.image_ids, intent.paths).await?;
        let paths = files.iter().map(|(_, path)| path.clone()).collect();
        let ctx = pass.ctx;
        // No lock covers the lookup in `unreferenced` and this unlink: none
        // stands for "no row names this path" (the application takes none
        // when it inserts a row), as in the job's own rerun
        // (`rows::intents::finish_left_over`). The intent's rows are deleted
        // and committed, so no task can reference them; a row committed
        // after the lookup that names one of these paths finds its file
        // gone. What stands there is that paths are unique per upload
        // (docs/OPERATIONS.md, "What still holds").
        let removals = ctx.storage.remove_many(paths, ctx.settings.unlink_concurrency).await;
        let errors: Vec<ErrorItem> = files
            .iter()
            .zip(&removals)
            .filter_map(|((id, path), removal)| match removal {
                Removal::Removed | Removal::Missing => None,
                Removal::Failed(message) => Some(ErrorItem {
                    image_id: Some(*id),
                    path: path.as_str().to_owned(),
                    error: format!(
                        "left by job {job_id}: could not be unlinked ({message}); the orphan sweep will retry it"
                    ),
                    operation: OPERATION.to_owned(),
                }),
            })
            .collect();
        let (kept, unlinked) = (listed - files.len(), files.len() - errors.len());
        let mut tx = pass.pool().begin().await?;
        let removed = spills::delete_intent(&mut tx, job_id, intent.batch).await?;
        let delta = Counters { deleted: removed, skipped: kept as i64, errors: errors.len() as i64, bytes: 0 };
        pass.commit(tx, delta, errors, started).await?;
        tracing::info!(%job_id, batch = intent.batch, unlinked, kept, "carried out a finished job's unlink intent");
    }
    Ok(PhaseEnd::Done)
}
