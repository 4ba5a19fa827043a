//! The Redis side of enqueueing: idempotent enqueue by job id, and the
//! session dedup key. Each step that reads and then writes is one Lua script,
//! so it is atomic however many producers and workers race.

use std::time::Duration;

use redis::aio::ConnectionLike;
use redis::{RedisResult, Script};
use uuid::Uuid;

/// `XADD` unless the job id is already on a stream, and remember it in the
/// ids hash. Returns the entry id, or nil if the job was already there. This
/// makes enqueueing idempotent: retrying a timed-out enqueue, or two
/// reconcilers re-enqueueing the same lost job, adds one entry.
pub(crate) const ENQUEUE_ONCE: &str = r"
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then return false end
local id = redis.call('XADD', KEYS[1], '*', 'job', ARGV[2])
redis.call('HSET', KEYS[2], ARGV[1], id)
return id
";

/// Takes the dedup key for a job unless another job holds it. Returns the
/// holder afterwards (this job if it took the key).
const CLAIM: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]
";

/// Moves the dedup key from a stale holder (a job that already ended) to a
/// new one. Returns the holder afterwards.
const REPLACE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return holder end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
return ARGV[2]
";

/// Deletes the dedup key if this job holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub(crate) async fn enqueue_once<C: ConnectionLike>(
    conn: &mut C,
    stream: &str,
    ids: &str,
    job_id: Uuid,
    payload: &str,
) -> RedisResult<Option<String>> {
    Script::new(ENQUEUE_ONCE).key(stream).key(ids).arg(job_id.to_string()).arg(payload).invoke_async(conn).await
}

pub(crate) async fn claim<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    job_id: Uuid,
    ttl: Duration,
) -> RedisResult<Uuid> {
    let holder: String =
        Script::new(CLAIM).key(key).arg(job_id.to_string()).arg(ttl.as_millis() as u64).invoke_async(conn).await?;
    Ok(holder.parse().unwrap_or(job_id))
}

pub(crate) async fn replace<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    stale: Uuid,
    job_id: Uuid,
    ttl: Duration,
) -> RedisResult<Uuid> {
    let holder: String = Script::new(REPLACE)
        .key(key)
        .arg(stale.to_string())
        .arg(job_id.to_string())
        .arg(ttl.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(holder.parse().unwrap_or(job_id))
}

pub(crate) async fn release<C: ConnectionLike>(conn: &mut C, key: &str, job_id: Uuid) -> RedisResult<()> {
    let _: i64 = Script::new(RELEASE).key(key).arg(job_id.to_string()).invoke_async(conn).await?;
    Ok(())
}
