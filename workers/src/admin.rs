//! What an operator does to jobs: cancel one, retry one, list and discard
//! dead letters, restore a sweep's quarantine. The CLI (`janitor
//! cancel|retry|dead|discard|restore`) and the admin API call these, through
//! a [`Producer`] (its database pool, Redis and queue prefix), or the pool
//! and the storage root for a restore.

use redis::streams::StreamRangeReply;
use redis::AsyncCommands as _;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::dedup;
use crate::job::{JobSpec, QueuedJob};
use crate::layout::Lane;
use crate::producer::{payload, Producer, ProducerError};
use crate::results::{self, Cancelled};
use crate::storage::trash::{self, Restored};
use crate::storage::Storage;

/// Dead letters read per request to the dead-letter streams.
const PAGE: usize = 1000;

/// One dead letter, as operators see it.
#[derive(Debug, Clone, Serialize)]
pub struct DeadEntry {
    /// `session` or `bulk`.
    pub lane: &'static str,
    /// Its id in the lane's dead-letter stream (what `discard` takes).
    pub entry_id: String,
    /// The job it carried, if its payload names one (or the id a raw entry
    /// was given).
    pub job_id: Option<Uuid>,
    pub operation: Option<String>,
    pub reason: String,
    pub attempts: u64,
    /// When it was dead-lettered (from its entry id), RFC 3339.
    pub dead_at: String,
}

/// Cancels a job: a queued one never starts, a running one stops at its
/// next batch boundary as `cancelled`, with its counts and checkpoint kept.
pub async fn cancel(producer: &Producer, job_id: Uuid, by: &str) -> Result<Cancelled, ProducerError> {
    let cancelled = results::cancel(producer.pool(), job_id, by).await.map_err(store)?;
    if let Cancelled::Now(record) = &cancelled {
        // Its stream entry, when delivered, finds the job ended and is acked.
        if let Ok(spec) = JobSpec::from_record(&record.operation, &record.params, record.dry_run) {
            forget(producer, job_id, &spec).await;
        }
    }
    Ok(cancelled)
}

/// Runs a failed, cancelled or dead-lettered job again under the same id,
/// from its checkpoint, so its totals stay exact across the runs. Its dead
/// letters are discarded. `Err` with the reason if it cannot be retried.
pub async fn retry(producer: &Producer, job_id: Uuid) -> Result<Result<(), String>, ProducerError> {
    let queue = producer.layout().prefix();
    let record = match results::requeue(producer.pool(), job_id, queue).await {
        Ok(Ok(record)) => record,
        Ok(Err(why)) => return Ok(Err(why)),
        Err(results::StoreError::Database(sqlx::Error::Database(err)))
            if err.constraint() == Some("job_results_one_unfinished_bulk") =>
        {
            return Ok(Err(format!("an equal job of {job_id} is queued or running; retry that one instead")));
        }
        Err(err) => return Err(store(err)),
    };
    let spec = JobSpec::from_record(&record.operation, &record.params, record.dry_run)
        .map_err(|err| ProducerError::Database(sqlx::Error::Decode(Box::new(err))))?;
    for entry in dead_letters(producer).await? {
        if entry.job_id == Some(job_id) {
            discard_entry(producer, entry.lane_of(), &entry.entry_id).await?;
        }
    }
    let layout = producer.layout();
    let mut redis = producer.redis();
    // Forget the entry that carried it before, then enqueue it afresh.
    let _: i64 = redis.hdel(layout.ids(), job_id.to_string()).await?;
    let message = payload(job_id, &spec, record.requested_by.as_deref());
    dedup::enqueue_once(&mut redis, &layout.stream(spec.lane()), &layout.ids(), job_id, &message).await?;
    tracing::info!(job_id = %job_id, "job retried from its checkpoint");
    Ok(Ok(()))
}

/// Why a job's quarantine is not restored. Nothing was moved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestoreRefusal {
    /// A queued or running sweep may still move files into its trash
    /// folder: a restore now would race it, file by file.
    #[error("job {0} is still {1}; restore its quarantine once it has ended (cancel it first)")]
    Unfinished(Uuid, String),
    #[error("job {0} is a {1} job, which quarantines nothing; only an orphan sweep (orphaned, or all) does")]
    NotASweep(Uuid, String),
    /// The sweep stopped with a batch decided but not finished. Its retry
    /// finishes that batch first, without walking again, and would take the
    /// batch's files back to the trash (a move back keeps the identity it
    /// checks), so a restore before then would be undone.
    #[error(
        "job {0} stopped in the middle of a batch of {1} files; retry it so that the batch finishes, then restore \
         its quarantine"
    )]
    PendingBatch(Uuid, i64),
    #[error(
        "job {0} has no quarantined files under {1} (it quarantined nothing, ran with --no-quarantine, or its \
         quarantine was restored or purged)"
    )]
    NoQuarantine(Uuid, String),
    #[error("no job {0} is recorded, and no quarantined files of it are under {1}")]
    NotFound(Uuid, String),
}

/// Moves a job's quarantined orphans back where they were, after the
/// guards: the job must have ended, be an orphan sweep (or `all`), and
/// have a trash folder. A job whose row was pruned may still be restored
/// from its folder: a pruned row was a finished job. Files that cannot go
/// back stay in the trash and are listed in the report.
pub async fn restore(
    pool: &PgPool,
    storage: &Storage,
    job_id: Uuid,
) -> anyhow::Result<Result<Restored, RestoreRefusal>> {
    let row: Option<(String, String, Option<i64>)> = sqlx::query_as(
        "SELECT status, operation, jsonb_array_length(checkpoint->'pending'->'files')::bigint
         FROM job_results WHERE job_id = $1",
    )
    .bind(job_id)
    .fetch_optional(pool)
    .await?;
    let folder = storage.root().join(trash::job_folder(job_id)).display().to_string();
    // What covers these checks and the moves: no lock. A job that ended
    // can start again only by a retry, after this check; a retry that
    // resumes a pending batch is refused here (that batch is the only work
    // that moves files without walking again), and one that walks afresh
    // leaves restored files alone, since a move back gives them a new
    // change time and so the whole grace period.
    if let Some((status, operation, pending)) = &row {
        if matches!(status.as_str(), "queued" | "running") {
            return Ok(Err(RestoreRefusal::Unfinished(job_id, status.clone())));
        }
        if !matches!(operation.as_str(), "cleanup_orphaned_files" | "cleanup_all") {
            return Ok(Err(RestoreRefusal::NotASweep(job_id, operation.clone())));
        }
        if let Some(files) = pending.filter(|files| *files > 0) {
            return Ok(Err(RestoreRefusal::PendingBatch(job_id, files)));
        }
    }
    let blocking = storage.clone();
    let found = tokio::task::spawn_blocking(move || trash::has_folder(&blocking, job_id)).await??;
    match (found, row) {
        (false, Some(_)) => return Ok(Err(RestoreRefusal::NoQuarantine(job_id, folder))),
        (false, None) => return Ok(Err(RestoreRefusal::NotFound(job_id, folder))),
        (true, _) => {}
    }
    let storage = storage.clone();
    let report = tokio::task::spawn_blocking(move || trash::restore(&storage, job_id)).await??;
    tracing::info!(%job_id, restored = report.restored, left = report.conflicts.len(), "quarantine restored");
    Ok(Ok(report))
}

/// Every dead letter of both lanes, oldest first.
pub async fn dead_letters(producer: &Producer) -> Result<Vec<DeadEntry>, ProducerError> {
    let mut redis = producer.redis();
    let mut dead = Vec::new();
    for lane in [Lane::Session, Lane::Bulk] {
        let stream = producer.layout().dead(lane);
        let mut start = "-".to_owned();
        loop {
            let reply: StreamRangeReply = redis.xrange_count(&stream, &start, "+", PAGE).await?;
            let Some(last) = reply.ids.last() else { break };
            start = format!("({}", last.id);
            for entry in &reply.ids {
                dead.push(dead_entry(producer, lane, entry));
            }
            if reply.ids.len() < PAGE {
                break;
            }
        }
    }
    Ok(dead)
}

/// The newest dead letters, at most `per_lane` of each lane, newest first:
/// one bounded `XREVRANGE` per lane, for pages that must stay cheap however
/// many letters there are.
pub async fn newest_dead_letters(producer: &Producer, per_lane: usize) -> Result<Vec<DeadEntry>, ProducerError> {
    let mut redis = producer.redis();
    let mut dead = Vec::new();
    for lane in [Lane::Session, Lane::Bulk] {
        let reply: StreamRangeReply = redis.xrevrange_count(producer.layout().dead(lane), "+", "-", per_lane).await?;
        dead.extend(reply.ids.iter().map(|entry| dead_entry(producer, lane, entry)));
    }
    // RFC 3339 in UTC with a fixed precision: text order is time order.
    dead.sort_by(|a, b| b.dead_at.cmp(&a.dead_at));
    Ok(dead)
}

fn dead_entry(producer: &Producer, lane: Lane, entry: &redis::streams::StreamId) -> DeadEntry {
    let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
    let message: Option<QueuedJob> = serde_json::from_str(&text("job")).ok();
    let source = text("source_id");
    let job_id = message
        .as_ref()
        .and_then(|m| m.job_id)
        .or_else(|| (!source.is_empty()).then(|| producer.layout().derived_job_id(&source)));
    let millis: i64 = entry.id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0);
    let dead_at = chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
    DeadEntry {
        lane: lane.name(),
        entry_id: entry.id.clone(),
        job_id,
        operation: message.map(|m| m.spec.job.operation().to_owned()),
        reason: text("reason"),
        attempts: text("attempts").parse().unwrap_or(0),
        dead_at: crate::report::rfc3339_micros(dead_at),
    }
}

impl DeadEntry {
    fn lane_of(&self) -> Lane {
        if self.lane == Lane::Session.name() {
            Lane::Session
        } else {
            Lane::Bulk
        }
    }
}

/// Removes dead letters: the one with this entry id, or every one of the
/// job with this id. Returns how many went.
pub async fn discard(producer: &Producer, target: &str) -> Result<usize, ProducerError> {
    let job_id: Option<Uuid> = target.parse().ok();
    let mut removed = 0;
    for entry in dead_letters(producer).await? {
        if entry.entry_id == target || (job_id.is_some() && entry.job_id == job_id) {
            removed += discard_entry(producer, entry.lane_of(), &entry.entry_id).await?;
        }
    }
    Ok(removed)
}

async fn discard_entry(producer: &Producer, lane: Lane, entry_id: &str) -> Result<usize, ProducerError> {
    let mut redis = producer.redis();
    let removed: usize = redis.xdel(producer.layout().dead(lane), &[entry_id]).await?;
    Ok(removed)
}

/// Drops what Redis holds for a job that has ended (its ids entry, and its
/// dedup key if it holds it).
async fn forget(producer: &Producer, job_id: Uuid, spec: &JobSpec) {
    let mut redis = producer.redis();
    if let Some(key) = spec.dedup_key(producer.layout()) {
        let _ = dedup::release(&mut redis, &key, job_id).await;
    }
    let _: redis::RedisResult<i64> = redis.hdel(producer.layout().ids(), job_id.to_string()).await;
}

fn store(err: results::StoreError) -> ProducerError {
    match err {
        results::StoreError::Database(err) => ProducerError::Database(err),
        other => ProducerError::Database(sqlx::Error::Protocol(other.to_string())),
    }
}
