//! The queue worker: apalis runs one worker per lane over our Redis Streams
//! backend, and each job's handler runs the engine. A reconciler runs beside
//! them (see [`crate::reconciler`]).
//!
//! What a handler tells the queue:
//! - finished (completed or failed in `job_results`) → acknowledge;
//! - interrupted by shutdown → hand the entry back at once (not an attempt);
//! - lease lost to another worker → leave the entry alone;
//! - an outage (database or Redis unavailable) → postpone with a capped
//!   backoff, not counted as an attempt, for up to `outage_horizon`;
//! - an error → retry with exponential backoff, and after `max_attempts`
//!   mark the job failed and dead-letter the entry.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use futures::FutureExt as _;
use tokio_util::sync::CancellationToken;
use tracing::Instrument as _;
use uuid::Uuid;

use crate::connection::{RedisTarget, Timeouts};
use crate::engine::{Engine, EngineError, RunControl, RunOutcome};

mod context;
mod outage;
mod reconciler;

use crate::job::{JobSpec, QueuedJob};
use crate::layout::Lane;
use crate::queue::error::Postpone;
use crate::queue::{Delivery, HandBack, Relinquish, StreamQueue};
use crate::results::{self, StoreError};
pub use context::{WorkerContext, WorkerSettings};

/// The factory of one lane's apalis worker (the monitor may call it again to
/// rebuild the worker). A macro, because the built worker's type cannot be
/// written down.
macro_rules! lane_worker {
    ($ctx:expr, $queue:expr, $lane:expr, $concurrency:expr) => {{
        let (ctx, queue, concurrency) = ($ctx.clone(), $queue, $concurrency);
        move |_| {
            WorkerBuilder::new(format!("janitor-{}", $lane.name()))
                // The same number twice: the backend fetches only free slots.
                .backend(queue.backend::<QueuedJob>(concurrency))
                .concurrency(concurrency)
                .data(ctx.clone())
                .build(handle)
        }
    }};
}

/// Runs the workers until `shutdown` is cancelled, then stops them: no new
/// fetches, running jobs checkpoint and are handed back, consumers leave
/// their groups. Returns once everything stopped or the shutdown timeout ran
/// out.
pub async fn run(
    engine: Engine,
    redis: impl Into<RedisTarget>,
    settings: WorkerSettings,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let redis = redis.into();
    let connection = redis
        .connect(Timeouts::response(Duration::from_secs(5)))
        .await
        .map_err(|err| anyhow::anyhow!("cannot connect to Redis: {err}"))?;
    let ctx = WorkerContext { engine, redis: connection, settings: Arc::new(settings), shutdown: shutdown.clone() };
    let session = StreamQueue::connect(redis.clone(), ctx.settings.queue_config(Lane::Session)).await?;
    let bulk = StreamQueue::connect(redis, ctx.settings.queue_config(Lane::Bulk)).await?;
    let reconciler = tokio::spawn(reconciler::run(ctx.clone(), [session.clone(), bulk.clone()]));

    let monitor = Monitor::new()
        .register(lane_worker!(ctx, session, Lane::Session, ctx.settings.session_concurrency))
        .register(lane_worker!(ctx, bulk, Lane::Bulk, ctx.settings.bulk_concurrency));
    let signal = {
        let shutdown = shutdown.clone();
        async move {
            shutdown.cancelled().await;
            Ok(())
        }
    };
    tracing::info!(worker = %ctx.settings.name, queue = ctx.settings.layout.prefix(), "worker started");
    let running = monitor.run_with_signal(signal);
    let deadline = async {
        shutdown.cancelled().await;
        tokio::time::sleep(ctx.settings.shutdown_timeout).await;
    };
    tokio::select! {
        result = running => result?,
        () = deadline => tracing::warn!("shutdown timed out; unfinished jobs will be rescued after their lease"),
    }
    reconciler.abort();
    tracing::info!("worker stopped");
    Ok(())
}

/// Runs one delivered job.
async fn handle(message: QueuedJob, delivery: Data<Delivery>, ctx: Data<WorkerContext>) -> Result<(), BoxDynError> {
    let job_id = message.job_id.unwrap_or_else(|| ctx.settings.layout.derived_job_id(&delivery.entry_id));
    let span = tracing::info_span!(
        "job",
        job_id = %job_id,
        operation = message.spec.job.operation(),
        attempt = delivery.delivery_count,
    );
    run_job(&ctx, job_id, &message.spec, &delivery.entry_id, delivery.delivery_count).instrument(span).await
}

async fn run_job(
    ctx: &WorkerContext,
    job_id: Uuid,
    spec: &JobSpec,
    entry_id: &str,
    attempt: u64,
) -> Result<(), BoxDynError> {
    let control = RunControl {
        cancel: ctx.shutdown.child_token(),
        worker: ctx.settings.name.clone(),
        on_batch: None,
        entry_id: Some(entry_id.to_owned()),
        lease: ctx.settings.lease,
        queue: Some(ctx.settings.layout.prefix().to_owned()),
        started_epoch: Arc::default(),
    };
    let coalesced = reconciler::coalesce(ctx, job_id, spec).await.map_err(EngineError::from);
    let outcome = match coalesced {
        Ok(Some(holder)) => {
            tracing::info!(duplicate_of = %holder, "an equal job is already queued or running; not running this one");
            return Ok(());
        }
        Ok(None) => AssertUnwindSafe(ctx.engine.run(job_id, spec, &control)).catch_unwind().await,
        Err(err) => Ok(Err(err)),
    };
    let error = match outcome {
        Ok(Ok(RunOutcome::Finished(_))) => {
            reconciler::forget(ctx, job_id, spec).await;
            return Ok(());
        }
        // The live delivery will finish the job; this entry is done.
        Ok(Ok(RunOutcome::Duplicate)) => return Ok(()),
        Ok(Ok(RunOutcome::Interrupted)) => {
            uncount(ctx, job_id, &control).await;
            return Err(HandBack(format!("job {job_id} interrupted by shutdown")).into());
        }
        Ok(Err(EngineError::Store(StoreError::LeaseLost(_)))) => {
            tracing::warn!("another worker took this job over; stopping without writing");
            return Err(Relinquish(format!("job {job_id}")).into());
        }
        Ok(Err(EngineError::Store(err @ StoreError::Mismatch { .. }))) => {
            // Another job's id: never touch its row; drop this delivery.
            return Err(AbortError::new(err).into());
        }
        Ok(Err(err)) if outage::is_outage(&err) => match outage::postpone(ctx, job_id).await {
            Some(delay) => {
                tracing::warn!(error = %err, retry_in = ?delay, "infrastructure unavailable; postponing the job");
                uncount(ctx, job_id, &control).await;
                return Err(Postpone { reason: err.to_string(), delay }.into());
            }
            None => format!("{err} (an outage for longer than {:?})", ctx.settings.outage_horizon),
        },
        Ok(Err(err)) => format!("{err}"),
        Err(panic) => format!("panicked: {}", panic_message(&panic)),
    };
    outage::clear(ctx, job_id).await;
    if attempt >= u64::from(ctx.settings.max_attempts) {
        let reason = format!("failed after {attempt} attempts; last error: {error}");
        tracing::error!(%reason, "job failed for good");
        results::fail_held(ctx.engine.pool(), job_id, &ctx.settings.name, &reason).await?;
        reconciler::forget(ctx, job_id, spec).await;
        return Err(AbortError::new(reason).into());
    }
    let delay = ctx.settings.backoff(attempt);
    tracing::warn!(%error, retry_in = ?delay, "job attempt failed; will retry");
    let _ = results::note_error(ctx.engine.pool(), job_id, &ctx.settings.name, &error).await;
    Err(RetryAfterError::new(error, delay).into())
}

/// Takes a run that was no failure of the job (postponed for an outage,
/// handed back at shutdown) off the row's attempts, as the queue takes it
/// off the entry's delivery count: attempts count only failures of the job
/// itself, and the reconciler fails a lost job by them. Only if this run
/// took the job (and so counted itself). In an outage of Postgres itself
/// the update is tried in the background until it lands, for as long as
/// the outage horizon.
async fn uncount(ctx: &WorkerContext, job_id: Uuid, control: &RunControl) {
    let Some(&epoch) = control.started_epoch.get() else {
        return;
    };
    let pool = ctx.engine.pool().clone();
    if results::uncount_attempt(&pool, job_id, epoch).await.is_ok() {
        return;
    }
    let (every, horizon) = (ctx.settings.retry_base, ctx.settings.outage_horizon);
    let shutdown = ctx.shutdown.clone();
    let task = async move {
        let deadline = tokio::time::Instant::now() + horizon;
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                () = tokio::time::sleep(every) => {}
            }
            match results::uncount_attempt(&pool, job_id, epoch).await {
                Ok(_) => return,
                Err(err) if tokio::time::Instant::now() >= deadline => {
                    tracing::warn!(error = %err, "could not take the run off the job's attempts");
                    return;
                }
                Err(_) => {}
            }
        }
    };
    tokio::spawn(task.instrument(tracing::Span::current()));
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned())
}
