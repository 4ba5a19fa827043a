//! The queue's Redis keys that grow with every job: the dead-letter streams
//! (`{prefix}:{lane}:dead`) and the ids hash (`{prefix}:ids`, job id →
//! stream entry id). Both are worked through in pages, so no command takes
//! long on a large key.

use std::collections::HashSet;

use redis::aio::ConnectionLike;
use redis::streams::StreamRangeReply;
use redis::{RedisResult, Script};
use sqlx::PgPool;
use uuid::Uuid;

/// Removes (or, in a dry run, counts) the next `limit` dead letters older
/// than `cutoff_ms`. A stream entry's id starts with the millisecond it was
/// added, which for a dead letter is when it was dead-lettered. Returns how
/// many, and where the next page starts (`None`: no more).
///
/// Not one script: `XRANGE` only finds how far the page reaches, and
/// `XTRIM … MINID` then removes exactly the entries below that bound. New
/// dead letters get newer ids, so nothing can slip in below it.
pub(crate) async fn trim_dead<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    cutoff_ms: i64,
    from: &str,
    limit: usize,
    dry_run: bool,
) -> RedisResult<(u64, Option<String>)> {
    if cutoff_ms <= 0 {
        return Ok((0, None));
    }
    // An end id of bare milliseconds reaches every entry of that millisecond.
    let page: StreamRangeReply =
        redis::cmd("XRANGE").arg(key).arg(from).arg(cutoff_ms - 1).arg("COUNT").arg(limit).query_async(conn).await?;
    let Some(last) = page.ids.last().map(|entry| entry.id.clone()) else {
        return Ok((0, None));
    };
    let full = page.ids.len() >= limit;
    if dry_run {
        return Ok((page.ids.len() as u64, full.then(|| format!("({last}"))));
    }
    let bound = if full { successor(&last) } else { cutoff_ms.to_string() };
    let removed: u64 = redis::cmd("XTRIM").arg(key).arg("MINID").arg(&bound).query_async(conn).await?;
    Ok((removed, (full && removed > 0).then(|| "-".to_owned())))
}

/// The stream id right after `id` (`ms-seq`).
fn successor(id: &str) -> String {
    let (ms, seq) = id.split_once('-').unwrap_or((id, "0"));
    let (ms, seq): (u64, u64) = (ms.parse().unwrap_or(0), seq.parse().unwrap_or(0));
    match seq.checked_add(1) {
        Some(next) => format!("{ms}-{next}"),
        None => format!("{}-0", ms + 1),
    }
}

/// One page of the ids hash from `cursor`: the next cursor (0 at the end)
/// and its `(job id, entry id)` pairs. Like every `HSCAN`, a page may repeat
/// an entry seen before if the hash grows meanwhile.
pub(crate) async fn ids_page<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    cursor: u64,
    count: usize,
) -> RedisResult<(u64, Vec<(String, String)>)> {
    let (next, flat): (u64, Vec<String>) =
        redis::cmd("HSCAN").arg(key).arg(cursor).arg("COUNT").arg(count).query_async(conn).await?;
    let mut pairs = Vec::with_capacity(flat.len() / 2);
    let mut flat = flat.into_iter();
    while let (Some(job), Some(entry)) = (flat.next(), flat.next()) {
        pairs.push((job, entry));
    }
    Ok((next, pairs))
}

/// Of a page of the ids hash, the entries whose job has finished or has no
/// row (a field that is not a job id has none either). Rows are recorded
/// before their job goes on a stream, so an entry without a row is one whose
/// row was pruned, or undone after a failed enqueue.
pub(crate) async fn forgotten(db: &PgPool, page: Vec<(String, String)>) -> sqlx::Result<Vec<(String, String)>> {
    let ids: Vec<Uuid> = page.iter().filter_map(|(job, _)| job.parse().ok()).collect();
    let live: HashSet<Uuid> =
        sqlx::query_scalar(concat!("SELECT job_id FROM job_results WHERE job_id = ANY($1) AND ", unfinished!()))
            .bind(&ids)
            .fetch_all(db)
            .await?
            .into_iter()
            .collect();
    Ok(page.into_iter().filter(|(job, _)| job.parse().map_or(true, |id| !live.contains(&id))).collect())
}

/// Deletes each `(job id, entry id)` whose entry id is still the one the page
/// read: a job enqueued again meanwhile (a new entry id) keeps its entry.
const DROP_UNCHANGED: &str = r"
local n = 0
for i = 1, #ARGV, 2 do
  if redis.call('HGET', KEYS[1], ARGV[i]) == ARGV[i + 1] then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
";

pub(crate) async fn drop_ids<C: ConnectionLike>(
    conn: &mut C,
    key: &str,
    entries: &[(String, String)],
) -> RedisResult<u64> {
    if entries.is_empty() {
        return Ok(0);
    }
    let script = Script::new(DROP_UNCHANGED);
    let mut invocation = script.key(key);
    for (job, entry) in entries {
        invocation.arg(job).arg(entry);
    }
    invocation.invoke_async(conn).await
}

#[cfg(test)]
mod tests {
    use super::successor;

    #[test]
    fn successors_of_stream_ids() {
        assert_eq!(successor("1700000000000-0"), "1700000000000-1");
        assert_eq!(successor("5-18446744073709551615"), "6-0");
    }
}
