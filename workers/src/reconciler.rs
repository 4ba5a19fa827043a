//! Keeping Redis and `job_results` in agreement. Postgres is the source of
//! truth for which jobs exist; Redis (which keeps nothing on disk here) only
//! carries them. Every worker runs a reconciler that, every
//! `reconcile_interval`:
//!
//! - fails the jobs whose entries went to a dead-letter stream (for example a
//!   job that crashed its worker on every attempt), recording the reason;
//! - re-enqueues this queue's `queued` or `running` jobs that have not moved
//!   for `reconcile_grace` and that Redis does not know (`{prefix}:ids`):
//!   jobs whose enqueue was cut short, or that Redis lost in a restart.
//!
//! Both steps are idempotent, so several workers may run them at once.

use std::collections::HashMap;

use redis::streams::StreamRangeReply;
use redis::AsyncCommands as _;
use uuid::Uuid;

use crate::dedup;
use crate::job::{JobSpec, QueuedJob};
use crate::layout::Lane;
use crate::queue::StreamQueue;
use crate::results;
use crate::worker::WorkerContext;

/// Dead letters read per stream per round.
const DEAD_BATCH: usize = 1000;
/// Lost jobs re-enqueued per round.
const LOST_BATCH: i64 = 1000;

pub(crate) async fn run(ctx: WorkerContext, queues: [StreamQueue; 2]) {
    let mut cursors: HashMap<String, String> = HashMap::new();
    let mut ticker = tokio::time::interval(ctx.settings.reconcile_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = ctx.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        for queue in &queues {
            let cursor = cursors.entry(queue.keys().dead.clone()).or_insert_with(|| "-".to_owned());
            if let Err(err) = fail_dead(&ctx, &queue.keys().dead, cursor).await {
                tracing::warn!(error = %err, "reconciler could not read dead letters");
            }
        }
        match requeue_lost(&ctx).await {
            Ok(0) => {}
            Ok(count) => tracing::warn!(count, "re-enqueued jobs that Redis did not have"),
            Err(err) => tracing::warn!(error = %err, "reconciler could not look for lost jobs"),
        }
    }
}

/// Fails the unfinished jobs of new dead letters, with the dead letter's reason.
async fn fail_dead(ctx: &WorkerContext, dead: &str, cursor: &mut String) -> anyhow::Result<()> {
    let mut redis = ctx.redis.clone();
    let start = if cursor == "-" { "-".to_owned() } else { format!("({cursor}") };
    let reply: StreamRangeReply = redis.xrange_count(dead, &start, "+", DEAD_BATCH).await?;
    let Some(last) = reply.ids.last() else {
        return Ok(());
    };
    *cursor = last.id.clone();
    let mut letters = Vec::new();
    for entry in &reply.ids {
        let text = |field: &str| entry.get::<String>(field).unwrap_or_default();
        let message: Option<QueuedJob> = serde_json::from_str(&text("job")).ok();
        let job_id = message
            .as_ref()
            .and_then(|m| m.job_id)
            .unwrap_or_else(|| ctx.settings.layout.derived_job_id(&text("source_id")));
        letters.push((job_id, text("reason"), message.map(|m| m.spec)));
    }
    let ids: Vec<Uuid> = letters.iter().map(|(id, _, _)| *id).collect();
    let unfinished: Vec<Uuid> =
        sqlx::query_scalar("SELECT job_id FROM job_results WHERE job_id = ANY($1) AND status IN ('queued', 'running')")
            .bind(&ids)
            .fetch_all(ctx.engine.pool())
            .await?;
    for (job_id, reason, spec) in letters.into_iter().filter(|(id, _, _)| unfinished.contains(id)) {
        tracing::error!(job_id = %job_id, %reason, "job dead-lettered; marking it failed");
        results::fail(ctx.engine.pool(), job_id, &format!("dead-lettered: {reason}")).await?;
        if let Some(spec) = spec {
            forget(ctx, job_id, &spec).await;
        }
    }
    Ok(())
}

/// Re-enqueues this queue's stale unfinished jobs that no stream carries.
async fn requeue_lost(ctx: &WorkerContext) -> anyhow::Result<usize> {
    let layout = &ctx.settings.layout;
    let grace = ctx.settings.reconcile_grace.as_secs_f64();
    let rows: Vec<(Uuid, String, serde_json::Value, bool, Option<String>)> = sqlx::query_as(
        "SELECT job_id, operation, params, dry_run, requested_by FROM job_results
         WHERE queue = $1 AND status IN ('queued', 'running')
           AND updated_at < now() - make_interval(secs => $2)
         ORDER BY updated_at LIMIT $3",
    )
    .bind(layout.prefix())
    .bind(grace)
    .bind(LOST_BATCH)
    .fetch_all(ctx.engine.pool())
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let mut redis = ctx.redis.clone();
    let ids: Vec<String> = rows.iter().map(|row| row.0.to_string()).collect();
    let known: Vec<Option<String>> = redis::cmd("HMGET").arg(layout.ids()).arg(&ids).query_async(&mut redis).await?;
    let mut requeued = Vec::new();
    for ((job_id, operation, params, dry_run, requested_by), known) in rows.into_iter().zip(known) {
        if known.is_some() {
            continue;
        }
        let spec = match JobSpec::from_record(&operation, &params, dry_run) {
            Ok(spec) => spec,
            Err(err) => {
                results::fail(ctx.engine.pool(), job_id, &format!("cannot rebuild job from its row: {err}")).await?;
                continue;
            }
        };
        let payload = crate::producer::payload(job_id, &spec, requested_by.as_deref());
        dedup::enqueue_once(&mut redis, &layout.stream(Lane::of(&spec)), &layout.ids(), job_id, &payload).await?;
        tracing::info!(job_id = %job_id, "re-enqueued a job Redis did not have");
        requeued.push(job_id);
    }
    sqlx::query("UPDATE job_results SET updated_at = now() WHERE job_id = ANY($1)")
        .bind(&requeued)
        .execute(ctx.engine.pool())
        .await?;
    Ok(requeued.len())
}

/// For a session job: the id of an equal job that is queued or running, if
/// there is one, in which case this job is recorded as its duplicate and not
/// run. Otherwise this job takes the session's dedup key. This is what
/// deduplicates session jobs that were enqueued with a raw `XADD`.
pub(crate) async fn coalesce(ctx: &WorkerContext, job_id: Uuid, spec: &JobSpec) -> anyhow::Result<Option<Uuid>> {
    let Some(key) = ctx.settings.layout.dedup(spec) else {
        return Ok(None);
    };
    let mut redis = ctx.redis.clone();
    let ttl = ctx.settings.dedup_ttl;
    let mut holder = dedup::claim(&mut redis, &key, job_id, ttl).await?;
    while holder.job_id != job_id {
        if dedup::holds(ctx.engine.pool(), &holder).await? {
            results::complete_as_duplicate(ctx.engine.pool(), job_id, spec, &ctx.settings.name, holder.job_id).await?;
            return Ok(Some(holder.job_id));
        }
        holder = dedup::replace(&mut redis, &key, &holder, job_id, ttl).await?;
    }
    Ok(None)
}

/// Drops what Redis holds for a job that has ended: its entry in the ids hash
/// and (a session job's) dedup key. Best effort: both also expire or are
/// overwritten.
pub(crate) async fn forget(ctx: &WorkerContext, job_id: Uuid, spec: &JobSpec) {
    let mut redis = ctx.redis.clone();
    let layout = &ctx.settings.layout;
    if let Some(key) = layout.dedup(spec) {
        if let Err(err) = dedup::release(&mut redis, &key, job_id).await {
            tracing::warn!(error = %err, "could not release the dedup key");
        }
    }
    let removed: redis::RedisResult<i64> = redis.hdel(layout.ids(), job_id.to_string()).await;
    if let Err(err) = removed {
        tracing::warn!(error = %err, "could not drop the job from the ids hash");
    }
}
