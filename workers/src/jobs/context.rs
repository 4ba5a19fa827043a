//! What a job's phases see while they run: the database, the settings, the
//! storage, the job's lease and the caller's controls, and the pacer that
//! spreads its deletions. The engine builds one per run.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::connection::RedisTarget;
use crate::layout::Layout;
use crate::progress::Progress;
use crate::results::Lease;
use crate::settings::EngineSettings;
use crate::storage::Storage;

/// The queue's Redis client and key layout.
#[derive(Debug, Clone)]
pub(crate) struct QueueLink {
    pub target: RedisTarget,
    pub layout: Layout,
}

/// Called after every committed batch, with the job's state.
pub type ProgressHook = Arc<dyn Fn(&BatchReport) + Send + Sync>;

/// What a progress hook is told.
#[derive(Debug, Clone)]
pub struct BatchReport {
    pub job_id: Uuid,
    pub phase: usize,
    pub batches: u64,
    pub elapsed: Duration,
    pub totals: crate::progress::Counters,
}

/// What a phase sees while it runs.
pub(crate) struct RunContext<'a> {
    pub pool: &'a PgPool,
    pub settings: &'a EngineSettings,
    /// The queue's Redis, for the job that tidies its keys (prune).
    pub queue: Option<&'a QueueLink>,
    pub storage: Storage,
    pub lease: Lease,
    pub dry_run: bool,
    /// The job's cap on deletions, if any.
    pub limit: Option<u64>,
    /// Cancelled: stop after the current batch, leaving the job resumable.
    pub cancel: &'a CancellationToken,
    pub on_batch: Option<&'a ProgressHook>,
    pub pacer: Pacer,
    /// The job is one phase of rows, so the batch that leaves it nothing to
    /// do ends it in the same transaction (`jobs::rows::batch`).
    pub ends_in_batch: bool,
}

impl RunContext<'_> {
    /// Reports a committed batch to the caller's hook and the log.
    pub(crate) fn batch_done(&self, progress: &Progress, elapsed: Duration) {
        let totals = progress.totals();
        tracing::debug!(
            batch = progress.batches,
            deleted = totals.deleted,
            skipped = totals.skipped,
            errors = totals.errors,
            elapsed_ms = elapsed.as_millis() as u64,
            "batch committed"
        );
        if let Some(hook) = self.on_batch {
            hook(&BatchReport {
                job_id: self.lease.job_id,
                phase: progress.checkpoint.phase,
                batches: progress.batches,
                elapsed,
                totals,
            });
        }
    }

    /// Deletions left under the job's limit (`None`: no limit).
    pub(crate) fn remaining(&self, progress: &Progress) -> Option<u64> {
        self.limit.map(|limit| limit.saturating_sub(progress.totals().deleted.max(0) as u64))
    }

    /// The most rows (or orphans) a batch takes. With a deletion rate, a
    /// tenth of a second's worth (at least one), so that the pacer's burst,
    /// one batch, keeps every second within 10% of the rate.
    pub(crate) fn page_size(&self) -> usize {
        self.pacer.burst.map_or(self.settings.batch_size, |burst| burst.get() as usize)
    }

    /// Waits, if a deletion rate is set, until `count` more deletions fit.
    /// Callers wait here before they claim anything, never while they hold
    /// a lock or an open transaction.
    pub(crate) async fn pace(&self, count: usize) {
        let (Some(limiter), Some(burst)) = (&self.pacer.limiter, self.pacer.burst) else { return };
        let mut left = count;
        while left > 0 {
            let take = left.min(burst.get() as usize);
            let cells = NonZeroU32::new(take as u32).unwrap_or(NonZeroU32::MIN);
            // `take` never exceeds the burst, so the capacity is always there.
            let _ = limiter.until_n_ready(cells).await;
            left -= take;
        }
    }
}

/// A token bucket over a job's deletions (`--max-deletes-per-sec`): tokens
/// come back at the rate, and at most one batch's worth is saved up, so time
/// spent elsewhere (a walk, an earlier phase) never turns into a burst.
pub(crate) struct Pacer {
    limiter: Option<governor::DefaultDirectRateLimiter>,
    /// The bucket's size, which is also the batch size when pacing.
    burst: Option<NonZeroU32>,
}

impl Pacer {
    pub(crate) fn new(per_sec: Option<u32>, batch_size: usize) -> Self {
        let Some(rate) = per_sec.and_then(NonZeroU32::new) else {
            return Self { limiter: None, burst: None };
        };
        let batch = u32::try_from(batch_size).unwrap_or(u32::MAX);
        let burst = NonZeroU32::new((rate.get() / 10).clamp(1, batch.max(1))).unwrap_or(NonZeroU32::MIN);
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Self { limiter: Some(governor::RateLimiter::direct(quota)), burst: Some(burst) }
    }
}
