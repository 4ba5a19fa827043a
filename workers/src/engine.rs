//! The engine: runs one job by id, from a fresh start or from its checkpoint,
//! and records its outcome. The CLI and the queue worker both call
//! [`Engine::run`]; neither knows how a job is done.

use std::path::PathBuf;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::connection::RedisTarget;
use crate::job::JobSpec;
pub use crate::jobs::context::{BatchReport, ProgressHook};
use crate::jobs::context::{Pacer, QueueLink, RunContext};
use crate::jobs::{self, Phase, PhaseEnd};
use crate::layout::Layout;
use crate::lease::{Heartbeat, Stop};
use crate::progress::Progress;
use crate::results::{self, JobRecord, Lease, Start, StoreError};
pub use crate::settings::{EngineSettings, DEFAULT_MIN_GRACE};
use crate::storage::Storage;

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
    /// Set to the lease epoch once the run has taken the job (and counted
    /// an attempt), so that the caller can take back a run that was no
    /// failure of the job (an outage, a shutdown).
    pub started_epoch: std::sync::Arc<std::sync::OnceLock<i64>>,
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

impl Engine {
    pub fn new(pool: PgPool, storage_root: impl Into<PathBuf>, settings: EngineSettings) -> Self {
        Self { pool, storage_root: storage_root.into(), settings, queue: None }
    }

    /// Gives the engine the queue's Redis and keys, which a prune job tidies
    /// (dead letters, the ids hash). Connects only when such a job runs.
    pub fn with_queue(mut self, target: impl Into<RedisTarget>, layout: Layout) -> Self {
        self.queue = Some(QueueLink { target: target.into(), layout });
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
                let record = self.finish_for_ended(record).await;
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
        let _ = control.started_epoch.set(lease.epoch);
        // Only the first start estimates the job's total (below, once the
        // heartbeat keeps the lease): a resumed run keeps its checkpoint's.
        let fresh = resumed.is_none();
        let mut progress = match resumed {
            Some(resumed) => {
                let (checkpoint, errors) = *resumed;
                tracing::info!(phase = checkpoint.phase, "resuming from checkpoint");
                let mut progress = Progress::new(checkpoint.as_of, 0, self.settings.error_cap);
                progress.checkpoint = checkpoint;
                // A checkpoint written before an upgrade that gave the job
                // more phases (a prune job's new kind of record) has no
                // counters for them yet; counting into them must not panic.
                let phases = jobs::phases(&spec.job, progress.checkpoint.as_of).len();
                if progress.checkpoint.phases.len() < phases {
                    progress.checkpoint.phases.resize(phases, Default::default());
                }
                progress.errors = errors;
                progress
            }
            None => Progress::new(now, jobs::phases(&spec.job, now).len(), self.settings.error_cap),
        };

        // A job built in code may carry a duration no decoding would accept:
        // it ends here as bad input, never in time arithmetic.
        if let Err(err) = spec.job.validate() {
            return self.end(lease, &progress, Err(("failed", format!("bad input: {err}")))).await;
        }
        let storage = match Storage::open(&self.storage_root) {
            Ok(storage) => storage,
            Err(err) => return self.end(lease, &progress, Err(("failed", format!("{err:#}")))).await,
        };
        // The lease stays fresh while the job runs; a cancel request or a
        // lost lease stops the job at its next batch boundary.
        let heartbeat = Heartbeat::start(self.pool.clone(), lease, control.cancel.child_token());
        let control = RunControl { cancel: heartbeat.stop().clone(), ..control.clone() };
        if fresh {
            progress.checkpoint.estimated_total = jobs::estimate::total(&self.pool, &spec.job, now).await;
        }
        let ctx = RunContext {
            pool: &self.pool,
            settings: &self.settings,
            queue: self.queue.as_ref(),
            storage,
            lease,
            dry_run: spec.dry_run,
            limit: spec.limit,
            cancel: &control.cancel,
            on_batch: control.on_batch.as_ref(),
            pacer: Pacer::new(self.settings.max_deletes_per_sec, self.settings.batch_size),
            ends_in_batch: matches!(jobs::phases(&spec.job, progress.checkpoint.as_of).as_slice(), [Phase::Rows(_)]),
        };
        let ended = self.phases(&ctx, spec, &mut progress).await?;
        match (ended, heartbeat.stopped_by()) {
            (Some(Ended::Recorded(record)), _) => {
                log_end(&record);
                Ok(RunOutcome::Finished(record))
            }
            (Some(Ended::Outcome(outcome)), _) => self.end(lease, &progress, outcome).await,
            (None, Some(Stop::Cancelled)) => self.end(lease, &progress, Err(("cancelled", String::new()))).await,
            (None, Some(Stop::LeaseLost)) => Err(EngineError::Store(StoreError::LeaseLost(lease.job_id))),
            (None, None) => {
                tracing::info!(batches = progress.batches, "interrupted; the job can resume from its checkpoint");
                Ok(RunOutcome::Interrupted)
            }
        }
    }

    /// Unlinks the files a job's last batch left when the job ended in that
    /// batch's transaction and its run stopped before the unlinks. Failing
    /// here costs nothing but time: prune carries out what is left.
    async fn finish_for_ended(&self, record: Box<JobRecord>) -> Box<JobRecord> {
        let settled = async {
            let storage = Storage::open(&self.storage_root)?;
            jobs::rows::finish_for_ended(&self.pool, &storage, &self.settings, &record).await
        };
        match settled.await {
            Ok(Some(settled)) => Box::new(settled),
            Ok(None) => record,
            Err(err) => {
                tracing::warn!(error = %format!("{err:#}"), "could not unlink the files an ended job left; prune will");
                record
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
    ) -> Result<Option<Ended>, EngineError> {
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
                PhaseEnd::Ended(record) => return Ok(Some(Ended::Recorded(record))),
                PhaseEnd::Refused(reason) => return Ok(Some(Ended::Outcome(Err(("failed", reason))))),
                PhaseEnd::Skipped(reason) if phases.len() == 1 => {
                    return Ok(Some(Ended::Outcome(Err(("skipped", reason)))));
                }
                PhaseEnd::Skipped(reason) => {
                    // Within `cleanup_all`: note it, and go on with the rest.
                    let item = crate::progress::ErrorItem {
                        image_id: None,
                        path: String::new(),
                        error: reason,
                        operation: crate::job::ALL_PHASES[progress.checkpoint.phase].to_owned(),
                    };
                    progress.add(crate::progress::Counters { errors: 1, ..Default::default() }, vec![item]);
                }
            }
            progress.next_phase();
            if progress.checkpoint.phase < phases.len() {
                let mut conn = self.pool.acquire().await.map_err(anyhow::Error::from)?;
                results::save_progress(&mut conn, ctx.lease, progress).await?;
                progress.saved();
            }
        }
        Ok(Some(Ended::Outcome(Ok(()))))
    }

    /// Ends the job with its final progress: `Ok` completes it;
    /// `Err((status, reason))` ends it as `failed`, `skipped` or `cancelled`
    /// with the reason (an empty reason keeps the one recorded, as a cancel
    /// request records its own).
    async fn end(
        &self,
        lease: Lease,
        progress: &Progress,
        outcome: Result<(), (&str, String)>,
    ) -> Result<RunOutcome, EngineError> {
        let record = match &outcome {
            Ok(()) => results::finish(&self.pool, lease, progress, "completed", None).await?,
            Err((status, reason)) => {
                tracing::warn!(%reason, "job {status}");
                let reason = (!reason.is_empty()).then_some(reason.as_str());
                results::finish(&self.pool, lease, progress, status, reason).await?
            }
        };
        log_end(&record);
        Ok(RunOutcome::Finished(Box::new(record)))
    }
}

/// How a job's phases ended.
enum Ended {
    /// `Ok`: every phase is done; `Err((status, reason))`: a phase ended the
    /// job early. Either way the end is still to be recorded.
    Outcome(Result<(), (&'static str, String)>),
    /// The last batch recorded the end in its own transaction.
    Recorded(Box<JobRecord>),
}

fn log_end(record: &JobRecord) {
    tracing::info!(
        status = %record.status,
        deleted = record.deleted_count,
        bytes = record.deleted_bytes,
        skipped = record.skipped_count,
        errors = record.error_count,
        "job finished"
    );
}
