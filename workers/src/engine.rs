//! The engine: runs one job by id, from a fresh start or from its checkpoint,
//! and records its outcome. The CLI and the queue worker both call
//! [`Engine::run`]; neither knows how a job is done.

use std::num::NonZeroU32;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::job::JobSpec;
use crate::jobs::{self, Phase, PhaseEnd};
use crate::lease::{Heartbeat, Stop};
use crate::layout::Layout;
use crate::progress::Progress;
use crate::results::{self, JobRecord, Lease, Start, StoreError};
use crate::storage::Storage;

/// The default floor of the orphan sweep's grace period.
pub const DEFAULT_MIN_GRACE: Duration = Duration::from_secs(600);

/// Tuning knobs. The defaults come from the benchmark (see the README).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Rows (or scanned files) per batch; one transaction each.
    pub batch_size: usize,
    /// Threads unlinking files at once within a batch.
    pub unlink_concurrency: usize,
    /// Error items kept in a job's row (the count goes on past it).
    pub error_cap: usize,
    /// Optional cap on deletions per second, per job.
    pub max_deletes_per_sec: Option<u32>,
    /// The orphan sweep deletes nothing if more than this share of the files
    /// it scans look orphaned.
    pub max_orphan_ratio: f64,
    /// Orphans are moved to `.janitor-trash/<job id>/` instead of unlinked.
    pub quarantine: bool,
    /// The shortest grace period the orphan sweep accepts: a file younger
    /// than this may be one the application is still writing, before it
    /// commits the row that refers to it.
    pub min_grace: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            unlink_concurrency: 8,
            error_cap: 100,
            max_deletes_per_sec: None,
            max_orphan_ratio: 0.2,
            quarantine: true,
            min_grace: DEFAULT_MIN_GRACE,
        }
    }
}

/// Everything a job needs: the database, the storage root and the settings.
/// Cheap to clone; there is no global state.
#[derive(Debug, Clone)]
pub struct Engine {
    pub(crate) pool: PgPool,
    pub(crate) storage_root: PathBuf,
    pub(crate) settings: EngineSettings,
    /// The queue's Redis, for the one job that tidies its keys
    /// (`prune_records`); every other job needs only Postgres and storage.
    pub(crate) queue: Option<QueueLink>,
}

/// The queue's Redis client and key layout.
#[derive(Debug, Clone)]
pub(crate) struct QueueLink {
    pub client: redis::Client,
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

/// How the caller steers one run.
#[derive(Clone, Default)]
pub struct RunControl {
    /// Cancelled: stop after the current batch, leaving the job resumable.
    pub cancel: CancellationToken,
    /// Recorded as the job's `worker`.
    pub worker: String,
    pub on_batch: Option<ProgressHook>,
    /// The queue entry and lease of a queued run (`None` for `janitor run`,
    /// which always takes the job over).
    pub entry_id: Option<String>,
    pub lease: std::time::Duration,
    /// The queue (key prefix) of a queued run.
    pub queue: Option<String>,
}

/// How a run ended.
#[derive(Debug)]
pub enum RunOutcome {
    /// Completed or failed; the row is final.
    Finished(Box<JobRecord>),
    /// Stopped on request; the row stays `running` with its checkpoint.
    Interrupted,
    /// Another entry of the same job is running it; nothing was done.
    Duplicate,
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Infrastructure trouble (database, a thread); the job may be retried
    /// and will resume from its checkpoint.
    #[error("{0:#}")]
    Transient(anyhow::Error),
}

impl From<anyhow::Error> for EngineError {
    /// Keeps a store error (above all a lost lease) typed when a phase
    /// returns it through `anyhow`, so callers can tell "another worker took
    /// over" from trouble worth retrying.
    fn from(err: anyhow::Error) -> Self {
        match err.downcast::<StoreError>() {
            Ok(store) => EngineError::Store(store),
            Err(other) => EngineError::Transient(other),
        }
    }
}

/// What a phase sees while it runs.
pub(crate) struct RunContext<'a> {
    pub engine: &'a Engine,
    pub storage: Storage,
    pub lease: Lease,
    pub dry_run: bool,
    /// The job's cap on deletions, if any.
    pub limit: Option<u64>,
    pub control: &'a RunControl,
    pacer: Pacer,
}

impl Engine {
    pub fn new(pool: PgPool, storage_root: impl Into<PathBuf>, settings: EngineSettings) -> Self {
        Self { pool, storage_root: storage_root.into(), settings, queue: None }
    }

    /// Gives the engine the queue's Redis and keys, which a prune job tidies
    /// (dead letters, the ids hash). Connects only when such a job runs.
    pub fn with_queue(mut self, client: redis::Client, layout: Layout) -> Self {
        self.queue = Some(QueueLink { client, layout });
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// Runs a job to its end (or to an interruption). Running a finished
    /// job again returns its record and does nothing, so a duplicate
    /// delivery never counts twice.
    #[tracing::instrument(skip_all, fields(job_id = %job_id, operation = spec.job.operation(), dry_run = spec.dry_run))]
    pub async fn run(&self, job_id: Uuid, spec: &JobSpec, control: &RunControl) -> Result<RunOutcome, EngineError> {
        let claim = control.entry_id.as_deref().map(|entry_id| results::Claim {
            entry_id,
            lease: control.lease,
            queue: control.queue.as_deref(),
        });
        let started = results::start(&self.pool, job_id, spec, &control.worker, claim.as_ref()).await?;
        let (lease, resumed, now) = match started {
            Start::Finished(record) => {
                tracing::info!(status = %record.status, "job already finished; not running it again");
                return Ok(RunOutcome::Finished(record));
            }
            Start::Busy(record) => {
                tracing::info!(worker = ?record.worker, "another delivery of this job is running it; this one is a duplicate");
                return Ok(RunOutcome::Duplicate);
            }
            Start::Equal(other) => {
                tracing::info!(equal = %other, "an equal job is queued or running; this one does not run");
                return Ok(RunOutcome::Duplicate);
            }
            Start::Run(lease, resumed, now) => (lease, resumed, now),
        };
        let mut progress = match resumed {
            Some(resumed) => {
                let (checkpoint, errors) = *resumed;
                tracing::info!(phase = checkpoint.phase, "resuming from checkpoint");
                let mut progress = Progress::new(checkpoint.as_of, 0, self.settings.error_cap);
                progress.checkpoint = checkpoint;
                progress.errors = errors;
                progress
            }
            None => Progress::new(now, jobs::phases(&spec.job, now).len(), self.settings.error_cap),
        };
        // A job built in code may carry a duration no decoding would accept:
        // it ends here as bad input, never in time arithmetic.
        if let Err(err) = spec.job.validate() {
            return self.end(lease, Err(("failed", format!("bad input: {err}")))).await;
        }
        let storage = match Storage::open(&self.storage_root) {
            Ok(storage) => storage,
            Err(err) => return self.end(lease, Err(("failed", format!("{err:#}")))).await,
        };
        // The lease stays fresh while the job runs; a cancel request or a
        // lost lease stops the job at its next batch boundary.
        let heartbeat = Heartbeat::start(self.pool.clone(), lease, control.cancel.child_token());
        let control = RunControl { cancel: heartbeat.stop().clone(), ..control.clone() };
        let ctx = RunContext {
            engine: self,
            storage,
            lease,
            dry_run: spec.dry_run,
            limit: spec.limit,
            control: &control,
            pacer: Pacer::new(self.settings.max_deletes_per_sec, self.settings.batch_size),
        };
        let ended = self.phases(&ctx, spec, &mut progress).await?;
        match (ended, heartbeat.stopped_by()) {
            (Some(outcome), _) => self.end(lease, outcome).await,
            (None, Some(Stop::Cancelled)) => self.end(lease, Err(("cancelled", String::new()))).await,
            (None, Some(Stop::LeaseLost)) => Err(EngineError::Store(StoreError::LeaseLost(lease.job_id))),
            (None, None) => {
                tracing::info!(batches = progress.batches, "interrupted; the job can resume from its checkpoint");
                Ok(RunOutcome::Interrupted)
            }
        }
    }

    /// Runs the job's phases from the checkpoint's. Returns how the job ends,
    /// or `None` if it was stopped between batches (resumable).
    async fn phases(
        &self,
        ctx: &RunContext<'_>,
        spec: &JobSpec,
        progress: &mut Progress,
    ) -> Result<Option<Result<(), (&'static str, String)>>, EngineError> {
        let phases = jobs::phases(&spec.job, progress.checkpoint.as_of);
        while let Some(phase) = phases.get(progress.checkpoint.phase) {
            let end = match phase {
                Phase::Rows(selector) => jobs::rows::run(ctx, selector, progress).await?,
                Phase::Orphans { min_age } => jobs::orphaned::run(ctx, *min_age, progress).await?,
                Phase::Trash { retention } => jobs::trash::run(ctx, *retention, progress).await?,
                Phase::Prune(step) => jobs::prune::run(ctx, step, progress).await?,
            };
            match end {
                PhaseEnd::Done => {}
                PhaseEnd::Interrupted => return Ok(None),
                PhaseEnd::Refused(reason) => return Ok(Some(Err(("failed", reason)))),
                PhaseEnd::Skipped(reason) if phases.len() == 1 => return Ok(Some(Err(("skipped", reason)))),
                PhaseEnd::Skipped(reason) => {
                    // Within `cleanup_all`: note it, and go on with the rest.
                    let item = crate::progress::ErrorItem {
                        image_id: None,
                        path: String::new(),
                        error: reason,
                        operation: crate::jobs::all::PHASE_OPERATIONS[progress.checkpoint.phase].to_owned(),
                    };
                    progress.add(crate::progress::Counters { errors: 1, ..Default::default() }, vec![item]);
                }
            }
            progress.next_phase();
            if progress.checkpoint.phase < phases.len() {
                let mut conn = self.pool.acquire().await.map_err(anyhow::Error::from)?;
                results::save_progress(&mut conn, ctx.lease, progress).await?;
            }
        }
        Ok(Some(Ok(())))
    }

    /// Ends the job: `Ok` completes it; `Err((status, reason))` ends it as
    /// `failed`, `skipped` or `cancelled` with the reason (an empty reason
    /// keeps the one recorded, as a cancel request records its own).
    async fn end(&self, lease: Lease, outcome: Result<(), (&str, String)>) -> Result<RunOutcome, EngineError> {
        let record = match &outcome {
            Ok(()) => results::finish(&self.pool, lease, "completed", None).await?,
            Err((status, reason)) => {
                tracing::warn!(%reason, "job {status}");
                let reason = (!reason.is_empty()).then_some(reason.as_str());
                results::finish(&self.pool, lease, status, reason).await?
            }
        };
        tracing::info!(
            status = %record.status,
            deleted = record.deleted_count,
            bytes = record.deleted_bytes,
            skipped = record.skipped_count,
            errors = record.error_count,
            "job finished"
        );
        Ok(RunOutcome::Finished(Box::new(record)))
    }
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
        if let Some(hook) = &self.control.on_batch {
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
        self.pacer.burst.map_or(self.engine.settings.batch_size, |burst| burst.get() as usize)
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
struct Pacer {
    limiter: Option<governor::DefaultDirectRateLimiter>,
    /// The bucket's size, which is also the batch size when pacing.
    burst: Option<NonZeroU32>,
}

impl Pacer {
    fn new(per_sec: Option<u32>, batch_size: usize) -> Self {
        let Some(rate) = per_sec.and_then(NonZeroU32::new) else {
            return Self { limiter: None, burst: None };
        };
        let batch = u32::try_from(batch_size).unwrap_or(u32::MAX);
        let burst = NonZeroU32::new((rate.get() / 10).clamp(1, batch.max(1))).unwrap_or(NonZeroU32::MIN);
        let quota = governor::Quota::per_second(rate).allow_burst(burst);
        Self { limiter: Some(governor::RateLimiter::direct(quota)), burst: Some(burst) }
    }
}
