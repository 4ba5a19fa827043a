//! Lua scripts for the steps that must check ownership atomically.
//!
//! A consumer may only touch an entry it still owns: if its lease expired and
//! another consumer rescued the entry, heartbeating, re-queueing or
//! dead-lettering it would steal work that is now running elsewhere. Redis has
//! no "claim if owner is X", so each script reads the owner with `XPENDING` and
//! acts in the same atomic step.

use std::{sync::LazyLock, time::Duration};

use redis::{aio::ConnectionLike, RedisResult, Script};

use super::config::Keys;

/// Resets the idle time of entries still owned by `ARGV[2]`; returns the ids it no longer owns.
static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local lost = {}
for i = 3, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'JUSTID')
  else
    table.insert(lost, id)
  end
end
return lost
",
    )
});

/// Moves entries owned by `ARGV[2]` to consumer `ARGV[3]` with idle time `ARGV[4]`
/// and delivery count adjusted by `ARGV[5]`; returns how many it moved.
static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local moved = 0
for i = 6, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[2] then
    local count = math.max(0, p[1][4] + tonumber(ARGV[5]))
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[3], 0, id,
      'IDLE', ARGV[4], 'RETRYCOUNT', count, 'JUSTID')
    moved = moved + 1
  end
end
return moved
",
    )
});

/// Copies an owned entry to the dead-letter stream, then acknowledges (and
/// optionally deletes) it. Returns 1 if done, 0 if the entry is not owned.
static DEAD_LETTER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local id = ARGV[3]
local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
if not p[1] or p[1][2] ~= ARGV[2] then return 0 end
local job, fields = '', nil
local e = redis.call('XRANGE', KEYS[1], id, id)
if e[1] then
  local f = e[1][2]
  for i = 1, #f, 2 do if f[i] == 'job' then job = f[i + 1] end end
  if job == '' then fields = cjson.encode(f) end
end
local entry = {'job', job, 'reason', ARGV[4], 'source_id', id,
  'attempts', ARGV[5], 'consumer', ARGV[2]}
if fields then table.insert(entry, 'fields'); table.insert(entry, fields) end
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', unpack(entry))
redis.call('XACK', KEYS[1], ARGV[1], id)
if ARGV[6] == '1' then redis.call('XDEL', KEYS[1], id) end
return 1
",
    )
});

/// Acknowledges entry `ARGV[2]` and, if `ARGV[3]` is `1`, deletes it. A
/// script rather than a `MULTI`: a Redis Cluster client follows a `MOVED`
/// for a script as for any keyed command, but not inside an aborted
/// transaction, so after a failover a `MULTI` ack failed until something
/// else refreshed the client's slot map.
static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '1' then redis.call('XDEL', KEYS[1], ARGV[2]) end
return 1
",
    )
});

/// Deletes consumer `ARGV[2]` only if it owns no pending entries (deleting a
/// consumer drops its pending entries, which would lose those jobs).
/// Returns 1 if deleted, 0 if it still owns entries.
static DELETE_IDLE_CONSUMER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
local p = redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if p[1] then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
",
    )
});

/// Refreshes the leases of `ids`; returns the ids this consumer no longer owns.
pub(crate) async fn heartbeat<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    group: &str,
    consumer: &str,
    ids: &[String],
) -> RedisResult<Vec<String>> {
    HEARTBEAT.key(&keys.stream).arg(group).arg(consumer).arg(ids).invoke_async(conn).await
}

/// How [`release`] re-queues entries.
pub(crate) struct Release<'a> {
    /// Consumer that will own the entries afterwards.
    pub(crate) to: &'a str,
    /// Idle time to set: the entry becomes rescuable after `min_idle - idle`.
    pub(crate) idle: Duration,
    /// Added to the delivery count (-1 for entries that never started).
    pub(crate) count_delta: i64,
}

/// Re-queues owned entries for a later rescue; returns how many were moved.
pub(crate) async fn release<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    group: &str,
    consumer: &str,
    how: Release<'_>,
    ids: &[String],
) -> RedisResult<usize> {
    let idle_ms = u64::try_from(how.idle.as_millis()).unwrap_or(u64::MAX);
    RELEASE
        .key(&keys.stream)
        .arg(group)
        .arg(consumer)
        .arg(how.to)
        .arg(idle_ms)
        .arg(how.count_delta)
        .arg(ids)
        .invoke_async(conn)
        .await
}

/// Acknowledges (and, with `delete`, deletes) one entry, in one step.
pub(crate) async fn ack<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    group: &str,
    entry_id: &str,
    delete: bool,
) -> RedisResult<()> {
    let _: i64 =
        ACK.key(&keys.stream).arg(group).arg(entry_id).arg(if delete { "1" } else { "0" }).invoke_async(conn).await?;
    Ok(())
}

/// What to record when dead-lettering an entry.
pub(crate) struct DeadLetterArgs<'a> {
    pub(crate) entry_id: &'a str,
    pub(crate) reason: &'a str,
    pub(crate) attempts: u64,
    pub(crate) delete: bool,
    pub(crate) max_len: usize,
}

/// Dead-letters an owned entry; returns false if this consumer no longer owns it.
pub(crate) async fn dead_letter<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    group: &str,
    consumer: &str,
    args: DeadLetterArgs<'_>,
) -> RedisResult<bool> {
    let done: i64 = DEAD_LETTER
        .key(&keys.stream)
        .key(&keys.dead)
        .arg(group)
        .arg(consumer)
        .arg(args.entry_id)
        .arg(args.reason)
        .arg(args.attempts)
        .arg(if args.delete { "1" } else { "0" })
        .arg(args.max_len)
        .invoke_async(conn)
        .await?;
    Ok(done == 1)
}

/// Deletes `consumer` from the group if it owns nothing; returns whether it did.
pub(crate) async fn delete_idle_consumer<C: ConnectionLike>(
    conn: &mut C,
    keys: &Keys,
    group: &str,
    consumer: &str,
) -> RedisResult<bool> {
    let done: i64 = DELETE_IDLE_CONSUMER.key(&keys.stream).arg(group).arg(consumer).invoke_async(conn).await?;
    Ok(done == 1)
}
