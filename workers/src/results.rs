//! The `job_results` table: one row per job, the job's source of truth.
//!
//! Life of a row: `queued` (inserted by a producer, or skipped when the
//! worker is the first to see the job) → `running` (a worker took a lease:
//! `attempts` and `lease_epoch` go up) → `completed` or `failed`. Every batch
//! commit and the final update are fenced by `lease_epoch`: a worker whose
//! lease was taken over updates zero rows, and its whole batch transaction
//! rolls back.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::job::JobSpec;
use crate::progress::{Checkpoint, ErrorItem, Progress};
pub use crate::record::JobRecord;

/// The right to run a job, until another worker takes it over. It lasts
/// `ttl` past its last renewal (`lease_expires_at` in the row).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub job_id: Uuid,
    pub epoch: i64,
    pub ttl: std::time::Duration,
}

/// What a lease renewal found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// An operator asked to cancel the job.
    CancelRequested,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another worker took the job over; this one must stop without writing.
    #[error("lease on job {0} was taken over by another worker")]
    LeaseLost(Uuid),
    #[error("job {job_id} is already recorded as {recorded}, not {requested}")]
    Mismatch { job_id: Uuid, recorded: String, requested: String },
    #[error("job {0} has an unreadable checkpoint: {1}")]
    BadCheckpoint(Uuid, serde_json::Error),
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// What `start`'s upsert returns: the epoch, the checkpoint and error
/// items, and the database's time.
type Started = (i64, Option<Value>, Value, DateTime<Utc>);

/// What `start` found.
#[derive(Debug)]
pub enum Start {
    /// The job is ours to run, from its last committed checkpoint if it has
    /// one. The time is the database's `now()`: cutoffs never depend on a
    /// worker's clock.
    Run(Lease, Option<Box<(Checkpoint, Vec<ErrorItem>)>>, DateTime<Utc>),
    /// The job already ended; running it again would count twice.
    Finished(Box<JobRecord>),
    /// Another queue entry of the same job is running it, and its worker is
    /// alive (it updated the row within the lease): this entry is a
    /// duplicate.
    Busy(Box<JobRecord>),
    /// Another job equal to this one (a bulk job with the same parameters) is
    /// queued or running on the queue: this one must not run.
    Equal(Uuid),
}

/// The statuses of a job that has not ended.
const UNFINISHED: [&str; 2] = ["queued", "running"];

/// How long a lease lasts past its last renewal when the caller names none
/// (`janitor run`).
pub const DEFAULT_LEASE: std::time::Duration = std::time::Duration::from_secs(30);

/// Where a queued run comes from: its stream entry, and the lease after
/// which a quiet holder may be taken over.
#[derive(Debug, Clone, Copy)]
pub struct Claim<'a> {
    pub entry_id: &'a str,
    pub lease: std::time::Duration,
    /// The queue (key prefix) the entry came from, recorded on a row the
    /// delivery creates (a raw `XADD`).
    pub queue: Option<&'a str>,
}

const COLUMNS: &str = "job_id, operation, params, dry_run, status, deleted_count, deleted_bytes, \
    skipped_count, error_count, errors, checkpoint, attempts, lease_epoch, worker, requested_by, \
    queue, entry_id, lease_expires_at, cancel_requested_at, last_error, result, created_at, started_at, \
    updated_at, finished_at";

/// A job about to be put on a queue.
#[derive(Debug, Clone)]
pub struct NewJob<'a> {
    pub job_id: Uuid,
    pub spec: &'a JobSpec,
    pub requested_by: Option<&'a str>,
    /// The queue's key prefix.
    pub queue: &'a str,
}

/// Records jobs as queued (producers do this before enqueueing), in one
/// transaction (a savepoint inside the caller's). A job id that is already
/// recorded is left as it is, and so is a bulk job equal to one that is
/// queued or running with a live lease on the same queue (the unique index
/// `job_results_one_unfinished_bulk`): see [`equal_unfinished`]. An equal
/// job that is `running` but whose lease has expired is superseded first:
/// see [`supersede_stale`].
pub async fn insert_queued<'c>(
    db: impl sqlx::Acquire<'c, Database = sqlx::Postgres>,
    jobs: &[NewJob<'_>],
) -> sqlx::Result<u64> {
    let ids: Vec<Uuid> = jobs.iter().map(|j| j.job_id).collect();
    let operations: Vec<&str> = jobs.iter().map(|j| j.spec.job.operation()).collect();
    let params: Vec<Value> = jobs.iter().map(|j| j.spec.params()).collect();
    let dry_runs: Vec<bool> = jobs.iter().map(|j| j.spec.dry_run).collect();
    let requested_by: Vec<Option<&str>> = jobs.iter().map(|j| j.requested_by).collect();
    let queues: Vec<&str> = jobs.iter().map(|j| j.queue).collect();
    let insert = sqlx::query(
        "INSERT INTO job_results (job_id, operation, params, dry_run, status, requested_by, queue)
         SELECT id, op, p, dry, 'queued', who, q
         FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::bool[], $5::text[], $6::text[])
              AS t(id, op, p, dry, who, q)
         ON CONFLICT DO NOTHING",
    )
    .bind(&ids)
    .bind(&operations)
    .bind(&params)
    .bind(&dry_runs)
    .bind(&requested_by)
    .bind(&queues);
    let mut conn = db.acquire().await?;
    // Only bulk jobs are ever superseded (session jobs are deduplicated in
    // Redis), so the enqueue of a logout stays one statement.
    if jobs.iter().all(|job| matches!(job.spec.job, crate::job::CleanupJob::Session { .. })) {
        return Ok(insert.execute(&mut *conn).await?.rows_affected());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    supersede_stale(&mut tx, &ids, &operations, &params, &dry_runs, &queues).await?;
    let inserted = insert.execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(inserted.rows_affected())
}

/// Fails the equal bulk jobs (same queue, operation, parameters and dry
/// run) of jobs about to be recorded that are `running` with an expired
/// lease, so that they no longer hold the unique index: a job counts as
/// unfinished only while it is queued or its lease is live.
///
/// Why this is safe:
/// - Only an expired lease is superseded. The `WHERE` is evaluated again on
///   the newest version of the row once its lock is ours (read committed),
///   so a holder that renewed its lease or a worker that took the job over
///   in the meantime keeps it, and the insert is then deduplicated.
/// - A holder that is in fact still alive (paused, cut off) finds its row
///   no longer `running` at its next renewal or batch commit: the epoch
///   fencing of [`renew`], [`save_progress`] and [`finish`] matches nothing,
///   the batch rolls back, and it stops without writing.
/// - The superseded row is `failed`, so the reconciler (which looks only at
///   queued and running rows) does not also re-enqueue it, and a delivery
///   of its old stream entry finds it ended and is acknowledged.
/// - A sweep that stopped with a batch between its move and its check after
///   the move (`pending` in its checkpoint) is not superseded: only its own
///   rerun, which the reconciler enqueues, moves back a file of that batch
///   that a row refers to again. Until then the new job is deduplicated.
/// - It runs in the transaction of the insert: a crash leaves both or
///   neither, never a stale job failed with no job to replace it. The new
///   job starts afresh; the work the stale one committed stays counted on
///   its row, and every bulk operation is idempotent.
async fn supersede_stale(
    tx: &mut PgConnection,
    ids: &[Uuid],
    operations: &[&str],
    params: &[Value],
    dry_runs: &[bool],
    queues: &[&str],
) -> sqlx::Result<()> {
    let stale: Vec<JobRecord> = sqlx::query_as(&format!(
        "UPDATE job_results SET status = 'failed', finished_at = now(), updated_at = now(), lease_expires_at = NULL,
             last_error = 'superseded by the equal job ' || t.id
                 || ': its lease had expired (its worker stopped renewing it)'
         FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::bool[], $5::text[]) AS t(id, op, p, dry, q)
         WHERE job_results.queue = t.q AND job_results.operation = t.op AND job_results.params = t.p
           AND job_results.dry_run = t.dry AND job_results.job_id <> t.id
           AND job_results.operation <> 'cleanup_session' AND job_results.status = 'running'
           AND (job_results.lease_expires_at IS NULL OR job_results.lease_expires_at < now())
           AND NOT coalesce(job_results.checkpoint ? 'pending', false)
         RETURNING {COLUMNS}"
    ))
    .bind(ids)
    .bind(operations)
    .bind(params)
    .bind(dry_runs)
    .bind(queues)
    .fetch_all(&mut *tx)
    .await?;
    for record in stale {
        tracing::warn!(job_id = %record.job_id, reason = record.last_error.as_deref().unwrap_or_default(), "superseded a job whose lease expired");
        store_result(tx, record).await?;
    }
    Ok(())
}

/// The queued job, or running job with a live lease, on `queue` equal to
/// `spec` (same operation, parameters and dry run), if there is one.
/// Session jobs are deduplicated in Redis instead, and are never found here.
pub async fn equal_unfinished(
    db: impl sqlx::PgExecutor<'_>,
    queue: &str,
    spec: &JobSpec,
) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT job_id FROM job_results
         WHERE queue = $1 AND operation = $2 AND params = $3 AND dry_run = $4
           AND (status = 'queued' OR (status = 'running' AND lease_expires_at >= now()))
           AND operation <> 'cleanup_session'",
    )
    .bind(queue)
    .bind(spec.job.operation())
    .bind(spec.params())
    .bind(spec.dry_run)
    .fetch_optional(db)
    .await
}

/// Records a job that will not run (a scheduled tick that was missed or
/// overlapped), with the reason, as `skipped`.
pub async fn insert_skipped(conn: &mut PgConnection, job: &NewJob<'_>, reason: &str) -> sqlx::Result<()> {
    let record: JobRecord = sqlx::query_as(&format!(
        "INSERT INTO job_results (job_id, operation, params, dry_run, status, requested_by, queue, last_error, finished_at)
         VALUES ($1, $2, $3, $4, 'skipped', $5, $6, $7, now())
         RETURNING {COLUMNS}"
    ))
    .bind(job.job_id)
    .bind(job.spec.job.operation())
    .bind(job.spec.params())
    .bind(job.spec.dry_run)
    .bind(job.requested_by)
    .bind(job.queue)
    .bind(reason)
    .fetch_one(&mut *conn)
    .await?;
    sqlx::query("UPDATE job_results SET result = $2 WHERE job_id = $1")
        .bind(job.job_id)
        .bind(crate::report::result_json(&record))
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Forgets a queued job that never reached its queue (the enqueue failed).
pub async fn delete_queued(pool: &PgPool, job_id: Uuid) -> sqlx::Result<()> {
    sqlx::query("DELETE FROM job_results WHERE job_id = $1 AND status = 'queued'").bind(job_id).execute(pool).await?;
    Ok(())
}

/// Takes the lease on a job: creates its row as running if it has none, or
/// moves a queued or running row to running under a new epoch. A row that
/// already ended is returned as it is.
pub async fn start(
    pool: &PgPool,
    job_id: Uuid,
    spec: &JobSpec,
    worker: &str,
    claim: Option<&Claim<'_>>,
) -> Result<Start, StoreError> {
    let queue = claim.and_then(|c| c.queue);
    let operation = spec.job.operation();
    let ttl = claim.map_or(DEFAULT_LEASE, |c| c.lease);
    // A queued row is free to take. A running row is another delivery's
    // unless it is the same entry (a rescue), or its holder let its lease
    // expire (died, or was paused), or this is `janitor run` (no entry),
    // which always takes the job over. `janitor run` also resumes a CLI job
    // (no queue) that was failed because its process ended without finishing
    // (see `fail_abandoned_runs`), or for any reason: rerunning it under its
    // id is the operator's explicit request, and it resumes from the
    // checkpoint, so its totals stay exact. A queued job that failed is run
    // again with `janitor retry` instead; a completed one is never rerun.
    // A start need not wait for its WAL flush: if a crash loses it, the job
    // was not started and its entry is delivered again; the first batch's
    // synchronous commit flushes it in any case. One statement, its own
    // transaction, which `set_config(.., true)` makes asynchronous (a
    // setting local to a transaction is read when it commits).
    let row: sqlx::Result<Option<Started>> = sqlx::query_as(
        "WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true))
         INSERT INTO job_results
             (job_id, operation, params, dry_run, status, attempts, lease_epoch, worker, started_at, entry_id,
              lease_expires_at, queue)
         SELECT $1, $2, $3, $4, 'running', 1, 1, $5, now(), $6, now() + make_interval(secs => $7), $8
         FROM async_commit
         ON CONFLICT (job_id) DO UPDATE SET
             status = 'running',
             attempts = job_results.attempts + 1,
             lease_epoch = job_results.lease_epoch + 1,
             worker = EXCLUDED.worker,
             entry_id = EXCLUDED.entry_id,
             lease_expires_at = EXCLUDED.lease_expires_at,
             started_at = coalesce(job_results.started_at, now()),
             finished_at = NULL,
             result = NULL,
             cancel_requested_at = CASE WHEN job_results.status = 'failed' THEN NULL
                                        ELSE job_results.cancel_requested_at END,
             updated_at = now()
         WHERE (job_results.status IN ('queued', 'running')
                OR ($6::text IS NULL AND job_results.status = 'failed' AND job_results.queue IS NULL))
           AND job_results.operation = EXCLUDED.operation
           AND job_results.params = EXCLUDED.params
           AND job_results.dry_run = EXCLUDED.dry_run
           AND (job_results.status = 'queued' OR $6::text IS NULL OR job_results.entry_id IS NULL
                OR job_results.entry_id = $6
                OR job_results.lease_expires_at IS NULL OR job_results.lease_expires_at < now())
         RETURNING lease_epoch, checkpoint, errors, now()",
    )
    .bind(job_id)
    .bind(operation)
    .bind(spec.params())
    .bind(spec.dry_run)
    .bind(worker)
    .bind(claim.map(|c| c.entry_id))
    .bind(ttl.as_secs_f64())
    .bind(queue)
    .fetch_optional(pool)
    .await;
    let row = match row {
        Err(sqlx::Error::Database(err)) if err.constraint() == Some("job_results_one_unfinished_bulk") => {
            let equal = equal_unfinished(pool, queue.unwrap_or_default(), spec).await?;
            return Ok(Start::Equal(equal.unwrap_or(Uuid::nil())));
        }
        row => row?,
    };

    let Some((epoch, checkpoint, errors, now)) = row else {
        let record = get(pool, job_id).await?.ok_or(sqlx::Error::RowNotFound)?;
        if record.is_finished() && record.operation == operation {
            return Ok(Start::Finished(Box::new(record)));
        }
        if record.status == "running" && record.operation == operation {
            return Ok(Start::Busy(Box::new(record)));
        }
        return Err(StoreError::Mismatch {
            job_id,
            recorded: format!("{} {} (dry_run={})", record.operation, record.params, record.dry_run),
            requested: format!("{operation} {} (dry_run={})", spec.params(), spec.dry_run),
        });
    };
    let lease = Lease { job_id, epoch, ttl };
    let resumed = match checkpoint {
        None => None,
        Some(value) => {
            let checkpoint = serde_json::from_value(value).map_err(|e| StoreError::BadCheckpoint(job_id, e))?;
            let errors = serde_json::from_value(errors).unwrap_or_default();
            Some(Box::new((checkpoint, errors)))
        }
    };
    Ok(Start::Run(lease, resumed, now))
}

/// Writes the counters, error items and checkpoint, and drops the unlink
/// intents they settle (`Progress::settled`), in one statement: inside the
/// batch's transaction, or alone. Fails with `LeaseLost` (and the caller
/// rolls back) if the job was taken over; then it dropped nothing either.
/// Once it committed, the caller calls [`Progress::saved`].
pub async fn save_progress(conn: &mut PgConnection, lease: Lease, progress: &Progress) -> Result<(), StoreError> {
    let totals = progress.totals();
    let checkpoint = serde_json::to_value(&progress.checkpoint).expect("checkpoint serializes");
    let errors = serde_json::to_value(&progress.errors).expect("error items serialize");
    let saved: i64 = sqlx::query_scalar(
        "WITH saved AS (
             UPDATE job_results SET
                 deleted_count = $3, deleted_bytes = $4, skipped_count = $5, error_count = $6,
                 errors = $7, checkpoint = $8, updated_at = now(),
                 lease_expires_at = now() + make_interval(secs => $9)
             WHERE job_id = $1 AND lease_epoch = $2 AND status = 'running'
             RETURNING job_id),
         settled AS (
             DELETE FROM janitor_unlink_intents
             WHERE job_id IN (SELECT job_id FROM saved) AND batch = ANY($10))
         SELECT count(*) FROM saved",
    )
    .bind(lease.job_id)
    .bind(lease.epoch)
    .bind(totals.deleted)
    .bind(totals.bytes)
    .bind(totals.skipped)
    .bind(totals.errors)
    .bind(errors)
    .bind(checkpoint)
    .bind(lease.ttl.as_secs_f64())
    .bind(&progress.settled)
    .fetch_one(&mut *conn)
    .await?;
    if saved == 0 {
        return Err(StoreError::LeaseLost(lease.job_id));
    }
    Ok(())
}

/// Renews the lease (the heartbeat of a running job, in every phase),
/// fenced by the epoch. Tells whether an operator asked to cancel the job.
pub async fn renew(pool: &PgPool, lease: Lease) -> Result<Renewal, StoreError> {
    // A renewal lost in a crash is only an older expiry: no need to wait
    // for the WAL flush.
    let mut tx = pool.begin().await?;
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    let cancel: Option<Option<DateTime<Utc>>> = sqlx::query_scalar(
        "UPDATE job_results SET lease_expires_at = now() + make_interval(secs => $3)
         WHERE job_id = $1 AND lease_epoch = $2 AND status = 'running'
         RETURNING cancel_requested_at",
    )
    .bind(lease.job_id)
    .bind(lease.epoch)
    .bind(lease.ttl.as_secs_f64())
    .fetch_optional(&mut *tx)
    .await?;
    tx.commit().await?;
    match cancel {
        None => Err(StoreError::LeaseLost(lease.job_id)),
        Some(Some(_)) => Ok(Renewal::CancelRequested),
        Some(None) => Ok(Renewal::Renewed),
    }
}

/// What a cancel request did.
#[derive(Debug, Clone)]
pub enum Cancelled {
    /// The job was queued: it is `cancelled` now and will never start.
    Now(Box<JobRecord>),
    /// The job is running: it stops at its next batch boundary.
    Requested,
    /// The job had already ended (its status).
    AlreadyEnded(String),
    NotFound,
}

/// Cancels a job: at once if it is queued, at its next batch boundary if it
/// is running.
pub async fn cancel(pool: &PgPool, job_id: Uuid, by: &str) -> Result<Cancelled, StoreError> {
    let reason = format!("cancelled by {by}");
    let status: Option<String> = sqlx::query_scalar(
        "UPDATE job_results SET cancel_requested_at = coalesce(cancel_requested_at, now()), last_error = $2,
             updated_at = now()
         WHERE job_id = $1 AND status IN ('queued', 'running') RETURNING status",
    )
    .bind(job_id)
    .bind(&reason)
    .fetch_optional(pool)
    .await?;
    match status.as_deref() {
        Some("queued") => match end(pool, job_id, None, "cancelled", Some(&reason), &["queued"], None).await? {
            Some(record) => Ok(Cancelled::Now(Box::new(record))),
            // It started in between: it sees the request at its next batch.
            None => Ok(Cancelled::Requested),
        },
        Some(_) => Ok(Cancelled::Requested),
        None => Ok(match get(pool, job_id).await? {
            Some(record) => Cancelled::AlreadyEnded(record.status),
            None => Cancelled::NotFound,
        }),
    }
}

/// Makes a failed or cancelled job `queued` again under the same id, keeping
/// its counts and checkpoint, so that its next run resumes and its totals
/// stay exact across the runs. Its attempts start over: the operator judged
/// the failures that used them up (they count only failures of the job
/// itself), and the reconciler must not fail the retried job the first
/// time its worker dies. Returns the row, or why it cannot be retried.
pub async fn requeue(pool: &PgPool, job_id: Uuid, queue: &str) -> Result<Result<JobRecord, String>, StoreError> {
    let record: Option<JobRecord> = sqlx::query_as(&format!(
        "UPDATE job_results SET status = 'queued', finished_at = NULL, cancel_requested_at = NULL,
             lease_expires_at = NULL, result = NULL, queue = $2, attempts = 0, updated_at = now()
         WHERE job_id = $1 AND status IN ('failed', 'cancelled') AND (queue IS NULL OR queue = $2)
         RETURNING {COLUMNS}"
    ))
    .bind(job_id)
    .bind(queue)
    .fetch_optional(pool)
    .await?;
    if let Some(record) = record {
        return Ok(Ok(record));
    }
    Ok(Err(match get(pool, job_id).await? {
        None => format!("no job {job_id} is recorded"),
        Some(record) if record.queue.as_deref().is_some_and(|q| q != queue) => {
            format!("job {job_id} belongs to queue {:?}, not {queue:?}", record.queue.unwrap_or_default())
        }
        Some(record) => format!("job {job_id} is {}; only failed or cancelled jobs can be retried", record.status),
    }))
}

/// Takes a run back off the job's attempts: the run under `epoch` was
/// postponed for an outage or handed back at shutdown, which is no failure
/// of the job itself. Fenced by the epoch: `>=`, since a later run that
/// started meanwhile counted itself, and this run still must not count.
pub async fn uncount_attempt(pool: &PgPool, job_id: Uuid, epoch: i64) -> sqlx::Result<bool> {
    let done = sqlx::query(
        "UPDATE job_results SET attempts = attempts - 1 WHERE job_id = $1 AND lease_epoch >= $2 AND attempts > 0",
    )
    .bind(job_id)
    .bind(epoch)
    .execute(pool)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Fails, up to `limit`, the `janitor run` jobs (no queue) whose lease has
/// expired: their process ended (killed, crashed, its machine lost) without
/// finishing, and no queue will ever deliver them again, so without this
/// they would stay `running` for ever. `janitor run <same operation>
/// --job-id <id>` resumes such a job from its checkpoint.
///
/// Race-free with a process that is still alive: only a row whose lease
/// has expired is taken, and Postgres evaluates the condition again on the
/// newest version of a row once it holds its lock, so a renewal that
/// committed first keeps the row `running`. A process that was merely
/// stalled past its lease finds its row `failed` at its next renewal or
/// batch commit (both need `status = 'running'` and its epoch), rolls back
/// and stops. Idempotent: any reconciler may run it, at the same time as
/// others.
pub async fn fail_abandoned_runs(pool: &PgPool, limit: i64) -> Result<Vec<JobRecord>, StoreError> {
    let mut tx = pool.begin().await?;
    // `SKIP LOCKED`: a row locked now is being renewed by its own process
    // or settled by another reconciler; either way it is not ours to take.
    let records: Vec<JobRecord> = sqlx::query_as(&format!(
        "UPDATE job_results SET status = 'failed', finished_at = now(), updated_at = now(), lease_expires_at = NULL,
             last_error = 'its janitor run process ended without finishing (its lease expired); '
                 || 'janitor run <same operation> --job-id ' || job_id || ' resumes it from its checkpoint'
         WHERE job_id IN (
                 SELECT job_id FROM job_results
                 WHERE queue IS NULL AND status = 'running'
                   AND (lease_expires_at IS NULL OR lease_expires_at < now())
                 ORDER BY lease_expires_at NULLS FIRST LIMIT $1
                 FOR UPDATE SKIP LOCKED)
           AND queue IS NULL AND status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < now())
         RETURNING {COLUMNS}"
    ))
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    let mut ended = Vec::with_capacity(records.len());
    for record in records {
        ended.push(store_result(&mut tx, record).await?);
    }
    tx.commit().await?;
    Ok(ended)
}

/// Ends the job: `completed`, or `failed` with the reason, with its final
/// progress (which settles the unlinks of its last batches, as
/// [`save_progress`] does) in the same statement. The final result JSON is
/// built from the row itself and stored with it, and listeners on the
/// `janitor_job_finished` channel are told the job id.
///
/// The commit is synchronous, unlike the start's: listeners are told, and a
/// `janitor run` prints, that the job ended, so a crash must not take that
/// back. (An end lost in a crash would leave a CLI job's row `running` with
/// no queue to rescue it, and make a job on its last attempt `failed` once
/// the reconciler found it.)
pub async fn finish(
    pool: &PgPool,
    lease: Lease,
    progress: &Progress,
    status: &str,
    last_error: Option<&str>,
) -> Result<JobRecord, StoreError> {
    let mut tx = pool.begin().await?;
    let record = finish_in(&mut tx, lease, progress, status, last_error, Listeners::Tell).await?;
    tx.commit().await?;
    Ok(record)
}

/// Whether the statement that stores a job's result tells the listeners on
/// `janitor_job_finished` (they are told when its transaction commits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Listeners {
    Tell,
    /// Later, by [`settle_ended`], once the files of the job's last batch
    /// are unlinked.
    Later,
}

/// [`finish`] in the caller's transaction: a job's last batch ends the job
/// in its own transaction (`jobs::rows`), so that a small job commits
/// synchronously once, not twice.
pub(crate) async fn finish_in(
    tx: &mut PgConnection,
    lease: Lease,
    progress: &Progress,
    status: &str,
    last_error: Option<&str>,
    listeners: Listeners,
) -> Result<JobRecord, StoreError> {
    let totals = progress.totals();
    let checkpoint = serde_json::to_value(&progress.checkpoint).expect("checkpoint serializes");
    let errors = serde_json::to_value(&progress.errors).expect("error items serialize");
    let record: Option<JobRecord> = sqlx::query_as(&format!(
        "WITH ended AS (
             UPDATE job_results SET
                 deleted_count = $3, deleted_bytes = $4, skipped_count = $5, error_count = $6,
                 errors = $7, checkpoint = $8,
                 status = $9, finished_at = now(), updated_at = now(), lease_expires_at = NULL,
                 last_error = CASE WHEN $9 = 'cancelled' THEN coalesce($10, last_error) ELSE $10 END,
                 started_at = coalesce(started_at, now())
             WHERE job_id = $1 AND lease_epoch = $2 AND status = 'running'
             RETURNING job_results.*),
         settled AS (
             DELETE FROM janitor_unlink_intents
             WHERE job_id IN (SELECT job_id FROM ended) AND batch = ANY($11))
         SELECT {COLUMNS} FROM ended"
    ))
    .bind(lease.job_id)
    .bind(lease.epoch)
    .bind(totals.deleted)
    .bind(totals.bytes)
    .bind(totals.skipped)
    .bind(totals.errors)
    .bind(errors)
    .bind(checkpoint)
    .bind(status)
    .bind(last_error)
    .bind(&progress.settled)
    .fetch_optional(&mut *tx)
    .await?;
    let record = record.ok_or(StoreError::LeaseLost(lease.job_id))?;
    Ok(store_result_and(tx, record, listeners).await?)
}

/// After a job that ended in its last batch's transaction ([`finish_in`]
/// with [`Listeners::Later`]) has unlinked that batch's files: drops their
/// intents (`progress.settled`) and tells the listeners, who so learn of
/// the end only once the files are gone.
///
/// If some files could not be unlinked, their error items go into the row
/// and its result first, in a synchronous commit: they are part of the
/// record. Otherwise the commit need not wait for the WAL flush. The job's
/// end is durable already, so a crash takes back nothing listeners were
/// told; it can only bring back the intents, whose rows are deleted and
/// committed, and which prune carries out (`prune::spills`), sparing a path
/// a row refers to again.
pub(crate) async fn settle_ended(
    pool: &PgPool,
    lease: Lease,
    progress: &Progress,
    record: JobRecord,
) -> Result<JobRecord, StoreError> {
    let totals = progress.totals();
    if totals.errors == record.error_count {
        sqlx::query(
            "WITH async_commit AS (SELECT set_config('synchronous_commit', 'off', true)),
             settled AS (DELETE FROM janitor_unlink_intents WHERE job_id = $1 AND batch = ANY($2))
             SELECT pg_notify('janitor_job_finished', $1::text) FROM async_commit",
        )
        .bind(lease.job_id)
        .bind(&progress.settled)
        .execute(pool)
        .await?;
        return Ok(record);
    }
    let errors = serde_json::to_value(&progress.errors).expect("error items serialize");
    let checkpoint = serde_json::to_value(&progress.checkpoint).expect("checkpoint serializes");
    let mut tx = pool.begin().await?;
    let amended: Option<JobRecord> = sqlx::query_as(&format!(
        "WITH amended AS (
             UPDATE job_results SET error_count = $3, errors = $4, checkpoint = $5, updated_at = now()
             WHERE job_id = $1 AND lease_epoch = $2 AND status = 'completed'
             RETURNING job_results.*),
         settled AS (
             DELETE FROM janitor_unlink_intents
             WHERE job_id IN (SELECT job_id FROM amended) AND batch = ANY($6))
         SELECT {COLUMNS} FROM amended"
    ))
    .bind(lease.job_id)
    .bind(lease.epoch)
    .bind(totals.errors)
    .bind(errors)
    .bind(checkpoint)
    .bind(&progress.settled)
    .fetch_optional(&mut *tx)
    .await?;
    // The row is fenced by the epoch of the run that ended it; nothing else
    // ends or reruns a completed job, so it is always found.
    let record = match amended {
        Some(amended) => store_result(&mut tx, amended).await?,
        None => record,
    };
    tx.commit().await?;
    Ok(record)
}

/// Records that the intents `batches` of a finished job were carried out
/// after its run (`rows::intents::finish_for_ended`): drops them, counts the
/// files that could not be unlinked as the job's errors (listing at most
/// `room` more), rebuilds its result and tells the listeners. Synchronous:
/// it is part of the job's record. Returns the row, if the job is finished.
pub(crate) async fn settle_left_over(
    pool: &PgPool,
    job_id: Uuid,
    batches: &[i64],
    errors: &[ErrorItem],
    room: usize,
) -> Result<Option<JobRecord>, StoreError> {
    let listed = serde_json::to_value(&errors[..errors.len().min(room)]).expect("error items serialize");
    let mut tx = pool.begin().await?;
    let amended: Option<JobRecord> = sqlx::query_as(&format!(
        "WITH amended AS (
             UPDATE job_results SET error_count = error_count + $3, errors = errors || $4, updated_at = now()
             WHERE job_id = $1 AND status NOT IN ('queued', 'running') AND finished_at IS NOT NULL
             RETURNING job_results.*),
         settled AS (
             DELETE FROM janitor_unlink_intents
             WHERE job_id IN (SELECT job_id FROM amended) AND batch = ANY($2))
         SELECT {COLUMNS} FROM amended"
    ))
    .bind(job_id)
    .bind(batches)
    .bind(errors.len() as i64)
    .bind(listed)
    .fetch_optional(&mut *tx)
    .await?;
    let record = match amended {
        Some(record) => Some(store_result(&mut tx, record).await?),
        None => None,
    };
    tx.commit().await?;
    Ok(record)
}

/// Fails a job that is not finished, whoever holds it: for jobs that ran out
/// of attempts or were dead-lettered. Returns `None` if there was no such
/// unfinished job.
pub async fn fail(pool: &PgPool, job_id: Uuid, reason: &str) -> Result<Option<JobRecord>, StoreError> {
    end(pool, job_id, None, "failed", Some(reason), &UNFINISHED, None).await
}

/// Fails a job that is not finished and has not been updated since `at`
/// (a dead letter's time), so that a job retried meanwhile is left alone.
pub async fn fail_unless_moved(
    pool: &PgPool,
    job_id: Uuid,
    reason: &str,
    at: DateTime<Utc>,
) -> Result<Option<JobRecord>, StoreError> {
    end(pool, job_id, None, "failed", Some(reason), &UNFINISHED, Some(at)).await
}

/// The final status and the result JSON (built from the row itself) in one
/// transaction, so one synchronous commit.
async fn end(
    pool: &PgPool,
    job_id: Uuid,
    epoch: Option<i64>,
    status: &str,
    last_error: Option<&str>,
    from: &[&str],
    unmoved_since: Option<DateTime<Utc>>,
) -> Result<Option<JobRecord>, StoreError> {
    let mut tx = pool.begin().await?;
    let record = end_in(&mut tx, job_id, epoch, status, last_error, from, unmoved_since).await?;
    tx.commit().await?;
    Ok(record)
}

/// [`end`] inside the caller's transaction.
async fn end_in(
    tx: &mut PgConnection,
    job_id: Uuid,
    epoch: Option<i64>,
    status: &str,
    last_error: Option<&str>,
    from: &[&str],
    unmoved_since: Option<DateTime<Utc>>,
) -> Result<Option<JobRecord>, StoreError> {
    let record: Option<JobRecord> = sqlx::query_as(&format!(
        "UPDATE job_results SET status = $3, finished_at = now(), updated_at = now(),
             last_error = CASE WHEN $3 = 'cancelled' THEN coalesce($4, last_error) ELSE $4 END,
             lease_expires_at = NULL,
             started_at = CASE WHEN status = 'queued' AND $3 = 'cancelled' THEN NULL ELSE coalesce(started_at, now()) END
         WHERE job_id = $1 AND ($2::bigint IS NULL OR lease_epoch = $2)
           AND status = ANY($5) AND ($2::bigint IS NULL OR status = 'running')
           AND ($6::timestamptz IS NULL OR updated_at <= $6)
         RETURNING {COLUMNS}"
    ))
    .bind(job_id)
    .bind(epoch)
    .bind(status)
    .bind(last_error)
    .bind(from)
    .bind(unmoved_since)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(record) = record else {
        return Ok(None);
    };
    Ok(Some(store_result(tx, record).await?))
}

/// Stores an ended job's result JSON, built from its row, and tells the
/// listeners on `janitor_job_finished`.
async fn store_result(tx: &mut PgConnection, record: JobRecord) -> sqlx::Result<JobRecord> {
    store_result_and(tx, record, Listeners::Tell).await
}

async fn store_result_and(
    tx: &mut PgConnection,
    mut record: JobRecord,
    listeners: Listeners,
) -> sqlx::Result<JobRecord> {
    let result = crate::report::result_json(&record);
    sqlx::query(
        "UPDATE job_results SET result = $2 WHERE job_id = $1
         RETURNING CASE WHEN $3 THEN pg_notify('janitor_job_finished', $1::text) END",
    )
    .bind(record.job_id)
    .bind(&result)
    .bind(listeners == Listeners::Tell)
    .fetch_optional(&mut *tx)
    .await?;
    record.result = Some(result);
    Ok(record)
}

/// Records a job that was not run because an equal one is queued or
/// running: completed, with nothing done, and `duplicate_of` in its result.
pub async fn complete_as_duplicate(
    pool: &PgPool,
    job_id: Uuid,
    spec: &JobSpec,
    worker: &str,
    duplicate_of: Uuid,
) -> Result<(), StoreError> {
    let Start::Run(lease, _, _) = start(pool, job_id, spec, worker, None).await? else {
        return Ok(());
    };
    end(pool, job_id, Some(lease.epoch), "completed", None, &UNFINISHED, None)
        .await?
        .ok_or(StoreError::LeaseLost(job_id))?;
    sqlx::query(
        "UPDATE job_results SET result = result || jsonb_build_object('duplicate_of', $2::text) WHERE job_id = $1",
    )
    .bind(job_id)
    .bind(duplicate_of.to_string())
    .execute(pool)
    .await?;
    Ok(())
}

/// Notes a failed attempt that will be retried, if this worker still holds
/// the job (a worker that lost it must not write on the new holder's row).
pub async fn note_error(pool: &PgPool, job_id: Uuid, worker: &str, error: &str) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE job_results SET last_error = $3, updated_at = now()
         WHERE job_id = $1 AND status IN ('queued', 'running') AND (worker = $2 OR worker IS NULL)",
    )
    .bind(job_id)
    .bind(worker)
    .bind(error)
    .execute(pool)
    .await?;
    Ok(())
}

/// Fails a job that ran out of attempts, if this worker still holds it.
pub async fn fail_held(
    pool: &PgPool,
    job_id: Uuid,
    worker: &str,
    reason: &str,
) -> Result<Option<JobRecord>, StoreError> {
    let held: Option<i64> = sqlx::query_scalar(
        "SELECT lease_epoch FROM job_results
         WHERE job_id = $1 AND status IN ('queued', 'running') AND (worker = $2 OR worker IS NULL)",
    )
    .bind(job_id)
    .bind(worker)
    .fetch_optional(pool)
    .await?;
    match held {
        Some(epoch) => end(pool, job_id, Some(epoch), "failed", Some(reason), &UNFINISHED, None).await,
        None => Ok(None),
    }
}

pub async fn get(pool: &PgPool, job_id: Uuid) -> sqlx::Result<Option<JobRecord>> {
    sqlx::query_as(&format!("SELECT {COLUMNS} FROM job_results WHERE job_id = $1"))
        .bind(job_id)
        .fetch_optional(pool)
        .await
}

#[derive(sqlx::FromRow)]
struct Settling {
    #[sqlx(flatten)]
    record: JobRecord,
    unlinking: bool,
}

/// The job's row, and whether files it committed to unlink are still
/// listed (a job that ended in its last batch, until `settle_ended`, or
/// one whose run stopped before it, until its redelivery or prune).
pub(crate) async fn get_settling(pool: &PgPool, job_id: Uuid) -> sqlx::Result<Option<(JobRecord, bool)>> {
    let row: Option<Settling> = sqlx::query_as(&format!(
        "SELECT {COLUMNS}, EXISTS (SELECT 1 FROM janitor_unlink_intents i WHERE i.job_id = job_results.job_id)
             AS unlinking
         FROM job_results WHERE job_id = $1"
    ))
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|row| (row.record, row.unlinking)))
}

/// Filters for listing jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub operation: Option<String>,
    pub status: Option<String>,
    /// The token name (or CLI user) that asked for the job.
    pub requested_by: Option<String>,
    /// Only jobs before this point in (created_at, job_id) order: the last
    /// job of the previous page. Without an id, jobs created before the time.
    pub before: Option<(DateTime<Utc>, Option<Uuid>)>,
    pub limit: i64,
}

/// One page of jobs, newest first. Cheap on any page with any filters
/// (migration `20261202000090_console_indexes`): the statement names only
/// the filters given, so each combination is planned on its own and a
/// filter's index is in its conditions; it is planned for its values on
/// every call (not persistent), because a plan made for one requester or
/// status would walk the wrong index for another. The page's job ids come
/// first from one index, checking the other filters on its entries, and
/// then their rows by primary key: a rare combination reads index entries,
/// not table rows.
pub async fn list(pool: &PgPool, filter: &ListFilter) -> sqlx::Result<Vec<JobRecord>> {
    let mut query = sqlx::QueryBuilder::<sqlx::Postgres>::new(format!(
        "SELECT {COLUMNS} FROM job_results WHERE job_id = ANY (ARRAY(SELECT job_id FROM job_results WHERE true"
    ));
    for (column, value) in
        [("operation", &filter.operation), ("status", &filter.status), ("requested_by", &filter.requested_by)]
    {
        if let Some(value) = value {
            query.push(format_args!(" AND {column} = ")).push_bind(value);
        }
    }
    if let Some((at, id)) = filter.before {
        match id {
            Some(id) => query.push(" AND (created_at, job_id) < (").push_bind(at).push(", ").push_bind(id).push(")"),
            None => query.push(" AND created_at < ").push_bind(at),
        };
    }
    query.push(" ORDER BY created_at DESC, job_id DESC LIMIT ").push_bind(filter.limit);
    query.push(")) ORDER BY created_at DESC, job_id DESC");
    query.build_query_as().persistent(false).fetch_all(pool).await
}

/// The running jobs, longest running first, at most `limit` of them
/// (through the partial index `job_results_unfinished`).
pub async fn running(pool: &PgPool, limit: i64) -> sqlx::Result<Vec<JobRecord>> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM job_results WHERE status = 'running'
         ORDER BY started_at NULLS LAST, job_id LIMIT $1"
    ))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The paging cursor of a job: `<created_at>~<job_id>`.
pub fn cursor(record: &JobRecord) -> String {
    format!("{}~{}", crate::report::rfc3339_micros(record.created_at), record.job_id)
}

/// Parses a cursor, or a plain RFC 3339 time.
pub fn parse_cursor(raw: &str) -> Option<(DateTime<Utc>, Option<Uuid>)> {
    let (time, id) = match raw.split_once('~') {
        Some((time, id)) => (time, Some(id.parse().ok()?)),
        None => (raw, None),
    };
    let at = DateTime::parse_from_rfc3339(time).ok()?.with_timezone(&Utc);
    Some((at, id))
}
