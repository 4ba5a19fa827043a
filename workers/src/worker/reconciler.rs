//! Keeping Redis and `job_results` in agreement. Postgres is the source of
//! truth for which jobs exist; Redis (which keeps nothing on disk here) only
//! carries them. Every worker runs a reconciler that, every
//! `reconcile_interval`:
//!
//! - fails the jobs whose entries went to a dead-letter stream (for example a
//!   job that crashed its worker on every attempt), recording the reason;
//! - re-enqueues this queue's jobs that no stream entry carries: `queued`
//!   rows that have not moved for `reconcile_grace` (an enqueue cut short, a
//!   Redis restart) and `running` rows whose lease expired (a dead or stalled
//!   worker), or fails the latter after their attempts;
//! - fails the `janitor run` jobs (no queue: any queue's reconciler settles
//!   them) whose lease expired, since their process ended without finishing
//!   and no queue will deliver them again; `janitor run --job-id` resumes
//!   them (see [`results::fail_abandoned_runs`]).
//!
//! Every step is idempotent, so several workers may run them at once.

use std::collections::HashMap;

use redis::streams::StreamRangeReply;
use redis::AsyncCommands as _;
use uuid::Uuid;

use super::context::WorkerContext;
use crate::connection::RedisConnection;
use crate::dedup;
use crate::job::{JobSpec, QueuedJob};
use crate::layout::Lane;
use crate::queue::StreamQueue;
use crate::results;

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
        match adopt_untagged(&ctx).await {
            Ok(0) => {}
            Ok(count) => tracing::warn!(
                count,
                stream = %ctx.settings.layout.stream(Lane::Session),
                "moved entries from the streams of before the hash tag; point the application's XADD at today's stream"
            ),
            Err(err) => tracing::warn!(error = %err, "reconciler could not read the streams of before the hash tag"),
        }
        match results::fail_abandoned_runs(ctx.engine.pool(), LOST_BATCH).await {
            Ok(failed) => {
                for record in &failed {
                    tracing::warn!(job_id = %record.job_id, operation = %record.operation, worker = ?record.worker,
                        "failed a janitor run job whose process ended without finishing; janitor run --job-id resumes it");
                }
            }
            Err(err) => tracing::warn!(error = %err, "reconciler could not look for abandoned janitor run jobs"),
        }
        match requeue_lost(&ctx).await {
            Ok(count) => {
                if count > 0 {
                    tracing::warn!(count, "re-enqueued jobs that Redis did not have");
                }
                // This pass read Postgres and Redis: the worker is alive.
                crate::health::touch(ctx.settings.health_file.as_deref()).await;
            }
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
        let millis: i64 = entry.id.split('-').next().and_then(|ms| ms.parse().ok()).unwrap_or(0);
        let dead_at = chrono::DateTime::from_timestamp_millis(millis).unwrap_or_default();
        letters.push((job_id, text("reason"), message.map(|m| m.spec), dead_at));
    }
    let ids: Vec<Uuid> = letters.iter().map(|(id, ..)| *id).collect();
    let dead_at: Vec<chrono::DateTime<chrono::Utc>> = letters.iter().map(|(.., at)| *at).collect();
    // Only a job that has not moved since its dead letter: one an operator
    // retried since (`janitor retry`) is queued again and must be left alone.
    let unfinished: Vec<Uuid> = sqlx::query_scalar(
        "SELECT r.job_id FROM job_results r JOIN unnest($1::uuid[], $2::timestamptz[]) AS d(job_id, at) USING (job_id)
         WHERE r.status IN ('queued', 'running') AND r.updated_at <= d.at",
    )
    .bind(&ids)
    .bind(&dead_at)
    .fetch_all(ctx.engine.pool())
    .await?;
    for (job_id, reason, spec, at) in letters.into_iter().filter(|(id, ..)| unfinished.contains(id)) {
        tracing::error!(job_id = %job_id, %reason, "job dead-lettered; marking it failed");
        let reason = format!("dead-lettered: {reason}");
        results::fail_unless_moved(ctx.engine.pool(), job_id, &reason, at).await?;
        if let Some(spec) = spec {
            forget(ctx, job_id, &spec).await;
        }
    }
    Ok(())
}

/// Moves what an application still adds to a lane's stream of before the
/// hash tag (`janitor:session:jobs`, see `Layout::untagged_stream`) onto
/// today's stream, oldest first, up to [`LOST_BATCH`] entries a lane per
/// pass: an upgrade does not strand a raw `XADD`. Each entry is added to
/// the new stream before it is deleted from the old one, so a crash in
/// between runs it twice (a job with a `job_id` still runs once; a raw one
/// is a second, idempotent cleanup), never not at all.
///
/// Not on a Redis Cluster: no deployment ran on one before the hash tag (its
/// scripts failed with `CROSSSLOT`), and the old keys would sit on other
/// masters, whose outage must not slow this pass.
async fn adopt_untagged(ctx: &WorkerContext) -> anyhow::Result<usize> {
    let layout = &ctx.settings.layout;
    let mut redis = ctx.redis.clone();
    if redis.is_cluster() {
        return Ok(0);
    }
    let mut moved = 0;
    for lane in Lane::ALL {
        let Some(old) = layout.untagged_stream(lane) else { continue };
        let reply: StreamRangeReply = redis.xrange_count(&old, "-", "+", LOST_BATCH).await?;
        for entry in &reply.ids {
            let mut add = redis::cmd("XADD");
            add.arg(layout.stream(lane)).arg("*");
            for (field, value) in &entry.map {
                add.arg(field).arg(redis::from_redis_value_ref::<Vec<u8>>(value)?);
            }
            let _: String = add.query_async(&mut redis).await?;
            let _: i64 = redis.xdel(&old, &[&entry.id]).await?;
            moved += 1;
        }
    }
    Ok(moved)
}

/// Re-enqueues this queue's unfinished jobs that no stream entry carries:
/// queued rows that have not moved for the grace period (an enqueue cut
/// short, a Redis restart), and running rows whose lease has expired (their
/// worker died or stalled). A running job that has used up its attempts is
/// failed instead. The new delivery takes the job over (its lease is
/// expired) and resumes from the checkpoint.
async fn requeue_lost(ctx: &WorkerContext) -> anyhow::Result<usize> {
    let layout = &ctx.settings.layout;
    let grace = ctx.settings.reconcile_grace.as_secs_f64();
    let rows: Vec<LostRow> = sqlx::query_as(
        "SELECT job_id, operation, params, dry_run, requested_by, status, attempts FROM job_results
         WHERE queue = $1
           AND ((status = 'queued' AND updated_at < now() - make_interval(secs => $2))
                OR (status = 'running' AND (lease_expires_at IS NULL OR lease_expires_at < now())))
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
    let ids: Vec<String> = rows.iter().map(|row| row.job_id.to_string()).collect();
    let entries: Vec<Option<String>> = redis::cmd("HMGET").arg(layout.ids()).arg(&ids).query_async(&mut redis).await?;
    let mut requeued = Vec::new();
    for (LostRow { job_id, operation, params, dry_run, requested_by, status, attempts }, entry) in
        rows.into_iter().zip(entries)
    {
        let spec = match JobSpec::from_record(&operation, &params, dry_run) {
            Ok(spec) => spec,
            Err(err) => {
                results::fail(ctx.engine.pool(), job_id, &format!("cannot rebuild job from its row: {err}")).await?;
                continue;
            }
        };
        let stream = layout.stream(spec.lane());
        if let Some(entry) = entry {
            // Still on its stream: its delivery (or a rescue of it) runs it.
            if carried(&mut redis, &stream, &entry).await? {
                continue;
            }
        }
        if status == "running" && attempts >= i32::try_from(ctx.settings.max_attempts).unwrap_or(i32::MAX) {
            let reason = format!("lost its worker on each of its {attempts} attempts");
            tracing::error!(job_id = %job_id, %reason, "job failed for good");
            results::fail(ctx.engine.pool(), job_id, &reason).await?;
            forget(ctx, job_id, &spec).await;
            continue;
        }
        let payload = crate::producer::payload(job_id, &spec, requested_by.as_deref());
        let _: i64 = redis.hdel(layout.ids(), job_id.to_string()).await?;
        dedup::enqueue_once(&mut redis, &stream, &layout.ids(), job_id, &payload).await?;
        tracing::info!(job_id = %job_id, %status, "re-enqueued a job no stream entry carried");
        requeued.push(job_id);
    }
    sqlx::query("UPDATE job_results SET updated_at = now() WHERE job_id = ANY($1)")
        .bind(&requeued)
        .execute(ctx.engine.pool())
        .await?;
    Ok(requeued.len())
}

/// A job the reconciler looks at.
#[derive(sqlx::FromRow)]
struct LostRow {
    job_id: Uuid,
    operation: String,
    params: serde_json::Value,
    dry_run: bool,
    requested_by: Option<String>,
    status: String,
    attempts: i32,
}

/// Whether the stream still holds the entry (pending or not yet read).
async fn carried(redis: &mut RedisConnection, stream: &str, entry: &str) -> redis::RedisResult<bool> {
    let reply: StreamRangeReply = redis.xrange_count(stream, entry, entry, 1).await?;
    Ok(!reply.ids.is_empty())
}

/// For a session job: the id of an equal job that is queued or running, if
/// there is one, in which case this job is recorded as its duplicate and not
/// run. Otherwise this job takes the session's dedup key. This is what
/// deduplicates session jobs that were enqueued with a raw `XADD`.
pub(crate) async fn coalesce(ctx: &WorkerContext, job_id: Uuid, spec: &JobSpec) -> anyhow::Result<Option<Uuid>> {
    let Some(key) = spec.dedup_key(&ctx.settings.layout) else {
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

/// `forget` in one round trip. KEYS: the ids hash, the postponed hash and,
/// for a session job, its dedup key (released only if this job holds it, as
/// `dedup::release` does). ARGV[1]: the job id. The keys share the
/// deployment's hash slot (see `layout`).
const FORGET: &str = r"
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if KEYS[3] then
  local holder = redis.call('GET', KEYS[3])
  if holder and string.sub(holder, 1, 36) == ARGV[1] then redis.call('DEL', KEYS[3]) end
end
return 0
";

/// Drops what Redis holds for a job that has ended: its entry in the ids hash,
/// its postponement and (a session job's) dedup key. Best effort: each also
/// expires, is overwritten or is swept by the reconciler.
pub(crate) async fn forget(ctx: &WorkerContext, job_id: Uuid, spec: &JobSpec) {
    static SCRIPT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| redis::Script::new(FORGET));
    let mut redis = ctx.redis.clone();
    let layout = &ctx.settings.layout;
    let mut invocation = SCRIPT.key(layout.ids());
    invocation.key(layout.postponed()).arg(job_id.to_string());
    if let Some(key) = spec.dedup_key(layout) {
        invocation.key(key);
    }
    let forgotten: redis::RedisResult<i64> = invocation.invoke_async(&mut redis).await;
    if let Err(err) = forgotten {
        tracing::warn!(error = %err, "could not drop the job's ids entry, postponement or dedup key");
    }
}
