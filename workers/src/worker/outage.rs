//! Telling an outage from a failure of the job itself.
//!
//! A job that fails because the database or Redis is unreachable, restarting
//! or out of connections has not failed: it is postponed with a capped
//! backoff and tried again, and the delivery does not count as an attempt,
//! for as long as `outage_horizon` (an hour by default) from the first
//! postponement. Only past that horizon does an outage start to use up the
//! job's attempts, so an outage delays jobs and never drops them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use redis::Script;
use uuid::Uuid;

use super::context::WorkerContext;
use crate::engine::EngineError;
use crate::results::StoreError;

/// Records when a job was first postponed (unless it is already recorded),
/// and returns that time in milliseconds.
const SINCE: &str = r"
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
";

/// Whether the error means "the infrastructure is unavailable", not "this
/// job failed".
pub(crate) fn is_outage(err: &EngineError) -> bool {
    match err {
        EngineError::Store(StoreError::Database(err)) => sqlx_outage(err),
        EngineError::Store(_) => false,
        EngineError::Transient(err) => err.chain().any(|cause| {
            cause.downcast_ref::<sqlx::Error>().is_some_and(sqlx_outage)
                || cause.downcast_ref::<redis::RedisError>().is_some_and(redis_outage)
                || cause
                    .downcast_ref::<StoreError>()
                    .is_some_and(|e| matches!(e, StoreError::Database(e) if sqlx_outage(e)))
        }),
    }
}

fn sqlx_outage(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        // Connection exceptions, a shutting down or starting server, too
        // many connections, out of resources.
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || code.starts_with("53") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

pub(crate) fn redis_outage(err: &redis::RedisError) -> bool {
    // The client's own judgement: anything it would retry or reconnect for
    // (loading, try again, cluster down, a dropped connection) is an outage.
    err.is_io_error()
        || err.is_connection_refusal()
        || err.is_connection_dropped()
        || err.is_timeout()
        || err.is_cluster_error()
        || !matches!(err.retry_method(), redis::RetryMethod::NoRetry)
}

/// How long to postpone the job, or `None` once it has been postponed for
/// longer than the horizon (it then counts as an attempt).
pub(crate) async fn postpone(ctx: &WorkerContext, job_id: Uuid) -> Option<Duration> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_millis() as u64;
    let mut redis = ctx.redis.clone();
    let key = ctx.settings.layout.postponed();
    let since: redis::RedisResult<u64> =
        Script::new(SINCE).key(&key).arg(job_id.to_string()).arg(now).invoke_async(&mut redis).await;
    // With Redis unreachable too, the entry cannot even be released: it stays
    // pending and is rescued after the lease.
    let elapsed = Duration::from_millis(now.saturating_sub(since.unwrap_or(now)));
    if elapsed > ctx.settings.outage_horizon {
        clear(ctx, job_id).await;
        return None;
    }
    Some((elapsed / 2).clamp(ctx.settings.retry_base, ctx.settings.lease.max(ctx.settings.retry_base)))
}

/// Forgets a job's postponement (it ran, or failed for its own reasons).
pub(crate) async fn clear(ctx: &WorkerContext, job_id: Uuid) {
    let mut redis = ctx.redis.clone();
    let removed: redis::RedisResult<i64> =
        redis::cmd("HDEL").arg(ctx.settings.layout.postponed()).arg(job_id.to_string()).query_async(&mut redis).await;
    if let Err(err) = removed {
        tracing::debug!(error = %err, "could not clear the job's postponement");
    }
}
