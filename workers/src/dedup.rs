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

/// Takes the dedup key for a job unless another job holds it. The key's
/// value is `<job id> <claimed at, ms>` (Redis's clock). Returns the value
/// afterwards and Redis's time now.
const CLAIM: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local holder = redis.call('GET', KEYS[1])
if holder and string.sub(holder, 1, 36) ~= ARGV[1] then return {holder, tostring(now)} end
local value = ARGV[1] .. ' ' .. now
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return {value, tostring(now)}
";

/// Moves the dedup key from a stale holder (a job that already ended, or
/// whose producer died before recording it) to a new one. Returns the value
/// afterwards and Redis's time now.
const REPLACE: &str = r"
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local holder = redis.call('GET', KEYS[1])
if holder and holder ~= ARGV[1] then return {holder, tostring(now)} end
local value = ARGV[2] .. ' ' .. now
redis.call('SET', KEYS[1], value, 'PX', ARGV[3])
return {value, tostring(now)}
";

/// Deletes the dedup key if this job holds it.
const RELEASE: &str = r"
local holder = redis.call('GET', KEYS[1])
if holder and string.sub(holder, 1, 36) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

/// Who holds a session's dedup key, and since when.
#[derive(Debug, Clone)]
pub(crate) struct Holder {
    pub job_id: Uuid,
    /// How long ago it took the key.
    pub age: Duration,
    raw: String,
}

impl Holder {
    fn parse((raw, now): (String, String)) -> Self {
        let mut parts = raw.split(' ');
        let job_id = parts.next().and_then(|id| id.parse().ok()).unwrap_or(Uuid::nil());
        let since: u64 = parts.next().and_then(|ms| ms.parse().ok()).unwrap_or(0);
        let now: u64 = now.parse().unwrap_or(0);
        Self { job_id, age: Duration::from_millis(now.saturating_sub(since)), raw }
    }
}

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
) -> RedisResult<Holder> {
    let reply: (String, String) =
        Script::new(CLAIM).key(key).arg(job_id.to_string()).arg(ttl.as_millis() as u64).invoke_async(conn).await?;
    Ok(Holder::parse(reply))
}

pub(crate) async fn replace<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    stale: &Holder,
    job_id: Uuid,
    ttl: Duration,
) -> RedisResult<Holder> {
    let reply: (String, String) = Script::new(REPLACE)
        .key(key)
        .arg(&stale.raw)
        .arg(job_id.to_string())
        .arg(ttl.as_millis() as u64)
        .invoke_async(conn)
        .await?;
    Ok(Holder::parse(reply))
}

/// How long a holder whose job is not recorded yet still counts: its
/// producer is between taking the key and inserting the row. After that,
/// the producer is presumed dead and the key is taken over.
pub(crate) const IN_FLIGHT: Duration = Duration::from_secs(30);

/// Whether `holder` still stands for a job that is queued or running.
pub(crate) async fn holds(pool: &sqlx::PgPool, holder: &Holder) -> sqlx::Result<bool> {
    // A running job counts only while its lease is live: one whose worker
    // died is recovered by the reconciler, and must not block new cleanups.
    let live: Option<bool> = sqlx::query_scalar(
        "SELECT status = 'queued' OR (status = 'running' AND lease_expires_at > now())
         FROM job_results WHERE job_id = $1",
    )
    .bind(holder.job_id)
    .fetch_optional(pool)
    .await?;
    Ok(live.unwrap_or(holder.age < IN_FLIGHT))
}

pub(crate) async fn release<C: ConnectionLike>(conn: &mut C, key: &str, job_id: Uuid) -> RedisResult<()> {
    let _: i64 = Script::new(RELEASE).key(key).arg(job_id.to_string()).invoke_async(conn).await?;
    Ok(())
}
