//! `prune_records`: janitor's own records pruned by age. What goes, what
//! stays and why is written in [`crate::retention`]; this is the job that
//! runs it: one phase per [`Kind`], in [`Kind::ALL`]'s order, each removing
//! in batches of the job's batch size. A Postgres batch is one short
//! transaction holding its deletions and the job's counters, fenced by the
//! lease; a Redis page is followed by a transaction with the counters.
//!
//! Idempotent: a rerun finds only what is left. Resumes at the kind it
//! stopped in; within a kind it starts over, which finds only what is left.
//! The cutoffs are the job's reference time minus each retention, fixed at
//! its first start. A dry run counts what would go and changes nothing. The
//! job's `limit` does not apply: a prune removes what is old, all of it.
//!
//! - `spills`: the unlink intents and orphan candidates of finished jobs.
//! - `queue`: the dead-letter streams and the ids hash, in Redis.

mod queue;
mod spills;

use std::time::Instant;

use chrono::{DateTime, Utc};

use sqlx::{Postgres, Transaction};

use super::{Phase, PhaseEnd};
use crate::jobs::context::RunContext;
use crate::progress::{Counters, Cursor, ErrorItem, Progress};
use crate::retention::tables::{self, Aged};
use crate::retention::{Kind, Retention};

pub const OPERATION: &str = "prune_records";

/// One phase: a kind, and the time before which its records go (`None`: the
/// kinds that go with their job, whatever their age).
#[derive(Debug, Clone)]
pub(crate) struct Step {
    kind: Kind,
    cutoff: Option<DateTime<Utc>>,
}

pub(crate) fn phases(retention: &Retention, as_of: DateTime<Utc>) -> Vec<Phase> {
    let cutoff = |kind: Kind| {
        let keep = chrono::Duration::from_std(kind.keep(retention)?).ok()?;
        Some(as_of.checked_sub_signed(keep).unwrap_or(DateTime::<Utc>::MIN_UTC))
    };
    Kind::ALL.iter().map(|&kind| Phase::Prune(Step { kind, cutoff: cutoff(kind) })).collect()
}

pub(crate) async fn run(ctx: &RunContext<'_>, step: &Step, progress: &mut Progress) -> anyhow::Result<PhaseEnd> {
    let mut pass = Pass { ctx, progress };
    match (step.kind, step.cutoff) {
        (Kind::UnlinkIntents, _) => spills::intents(&mut pass).await,
        (Kind::OrphanCandidates, _) => spills::candidates(&mut pass).await,
        (Kind::SessionJobs, Some(cutoff)) => aged(&mut pass, Aged::Jobs("session"), cutoff).await,
        (Kind::CompletedJobs, Some(cutoff)) => aged(&mut pass, Aged::Jobs("completed"), cutoff).await,
        (Kind::FailedJobs, Some(cutoff)) => aged(&mut pass, Aged::Jobs("failed"), cutoff).await,
        (Kind::AuditLog, Some(cutoff)) => aged(&mut pass, Aged::AuditLog, cutoff).await,
        (Kind::ScheduleTicks, Some(cutoff)) => ticks(&mut pass, cutoff).await,
        (Kind::DeadLetters(lane), Some(cutoff)) => queue::dead_letters(&mut pass, lane, cutoff).await,
        (Kind::ConsoleSessions, Some(cutoff)) => aged(&mut pass, Aged::ConsoleSessions, cutoff).await,
        (Kind::QueueIds, _) => queue::ids(&mut pass).await,
        (kind, None) => anyhow::bail!("no cutoff for {}", kind.name()),
    }
}

/// A phase under way: the context and the job's progress.
struct Pass<'p, 'c> {
    ctx: &'p RunContext<'c>,
    progress: &'p mut Progress,
}

impl Pass<'_, '_> {
    fn stopped(&self) -> bool {
        self.ctx.cancel.is_cancelled()
    }

    fn batch_size(&self) -> i64 {
        self.ctx.settings.batch_size as i64
    }

    fn pool(&self) -> &sqlx::PgPool {
        self.ctx.pool
    }

    /// Commits one batch: whatever `tx` holds (its deletions) with the
    /// job's counters, fenced by the lease.
    async fn commit(
        &mut self,
        mut tx: Transaction<'_, Postgres>,
        delta: Counters,
        errors: Vec<ErrorItem>,
        started: Instant,
    ) -> anyhow::Result<()> {
        let mut next = self.progress.clone();
        next.record(delta, errors, Cursor::Start);
        next.observe(started.elapsed());
        crate::results::save_progress(&mut tx, self.ctx.lease, &next).await?;
        tx.commit().await?;
        *self.progress = next;
        self.ctx.batch_done(self.progress, started.elapsed());
        Ok(())
    }

    /// Records counts of work done outside Postgres (Redis, a dry run's count).
    async fn record(&mut self, removed: i64, started: Instant) -> anyhow::Result<()> {
        let tx = self.pool().begin().await?;
        self.commit(tx, removed_count(removed), Vec::new(), started).await
    }

    /// Ends one batch whose statement (in `tx`) removed `removed` rows:
    /// commits it with the counts and returns true, or, when it removed
    /// nothing (none are left), rolls it back and returns false.
    async fn commit_removed(
        &mut self,
        tx: Transaction<'_, Postgres>,
        removed: i64,
        started: Instant,
    ) -> anyhow::Result<bool> {
        if removed == 0 {
            return Ok(false);
        }
        self.commit(tx, removed_count(removed), Vec::new(), started).await?;
        Ok(true)
    }
}

fn removed_count(removed: i64) -> Counters {
    Counters { deleted: removed, ..Counters::default() }
}

/// Rows of one [`Aged`] table (job rows of one class, audit log rows,
/// expired console sessions) older than the cutoff.
async fn aged(pass: &mut Pass<'_, '_>, table: Aged, cutoff: DateTime<Utc>) -> anyhow::Result<PhaseEnd> {
    if pass.ctx.dry_run {
        let started = Instant::now();
        let count = tables::count_aged(pass.pool(), table, cutoff).await?;
        pass.record(count, started).await?;
        return Ok(PhaseEnd::Done);
    }
    let mut after = None;
    loop {
        if pass.stopped() {
            return Ok(PhaseEnd::Interrupted);
        }
        let started = Instant::now();
        let mut tx = pass.pool().begin().await?;
        let removed = tables::delete_aged(&mut tx, table, cutoff, &mut after, pass.batch_size()).await?;
        if !pass.commit_removed(tx, removed, started).await? {
            return Ok(PhaseEnd::Done);
        }
    }
}

/// Schedule ticks older than the cutoff, schedule by schedule on each queue.
async fn ticks(pass: &mut Pass<'_, '_>, cutoff: DateTime<Utc>) -> anyhow::Result<PhaseEnd> {
    let (started, mut counted) = (Instant::now(), 0);
    for schedule in tables::schedules(pass.pool()).await? {
        let bounds = tables::tick_bounds(pass.pool(), &schedule, cutoff).await?;
        if pass.ctx.dry_run {
            counted += tables::count_ticks(pass.pool(), &schedule, bounds).await?;
            continue;
        }
        let mut after = None;
        loop {
            if pass.stopped() {
                return Ok(PhaseEnd::Interrupted);
            }
            let started = Instant::now();
            let mut tx = pass.pool().begin().await?;
            let removed = tables::delete_ticks(&mut tx, &schedule, bounds, &mut after, pass.batch_size()).await?;
            if !pass.commit_removed(tx, removed, started).await? {
                break;
            }
        }
    }
    if pass.ctx.dry_run {
        pass.record(counted, started).await?;
    }
    Ok(PhaseEnd::Done)
}
