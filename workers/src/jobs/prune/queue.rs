//! The prune's Redis kinds: the dead-letter streams and the ids hash, page
//! by page, each page's count committed after it.

use std::time::Instant;

use chrono::{DateTime, Utc};

use super::Pass;
use crate::connection::{RedisConnection, Timeouts};
use crate::jobs::PhaseEnd;
use crate::layout::{Lane, Layout};
use crate::retention::queue;

/// One lane's dead letters older than the cutoff.
pub(super) async fn dead_letters(
    pass: &mut Pass<'_, '_>,
    lane: Lane,
    cutoff: DateTime<Utc>,
) -> anyhow::Result<PhaseEnd> {
    let Some((mut conn, layout)) = redis(pass).await? else {
        return Ok(no_queue());
    };
    let (started, mut counted) = (Instant::now(), 0);
    let key = layout.dead(lane);
    let limit = pass.batch_size() as usize;
    let mut from = Some("-".to_owned());
    while let Some(start) = from {
        if pass.stopped() {
            return Ok(PhaseEnd::Interrupted);
        }
        let page = Instant::now();
        let (removed, next) =
            queue::trim_dead(&mut conn, &key, cutoff.timestamp_millis(), &start, limit, pass.ctx.dry_run).await?;
        from = next;
        if pass.ctx.dry_run {
            counted += removed as i64;
        } else if removed > 0 {
            pass.record(removed as i64, page).await?;
        }
    }
    if pass.ctx.dry_run {
        pass.record(counted, started).await?;
    }
    Ok(PhaseEnd::Done)
}

/// Entries of `{prefix}:ids` whose job has finished or has no row.
pub(super) async fn ids(pass: &mut Pass<'_, '_>) -> anyhow::Result<PhaseEnd> {
    let Some((mut conn, layout)) = redis(pass).await? else {
        return Ok(no_queue());
    };
    let (started, mut counted) = (Instant::now(), 0);
    let key = layout.ids();
    let limit = pass.batch_size() as usize;
    let mut cursor = 0;
    loop {
        if pass.stopped() {
            return Ok(PhaseEnd::Interrupted);
        }
        let page = Instant::now();
        let (next, entries) = queue::ids_page(&mut conn, &key, cursor, limit).await?;
        let doomed = queue::forgotten(pass.pool(), entries).await?;
        if pass.ctx.dry_run {
            counted += doomed.len() as i64;
        } else if !doomed.is_empty() {
            let removed = queue::drop_ids(&mut conn, &key, &doomed).await?;
            pass.record(removed as i64, page).await?;
        }
        if next == 0 {
            break;
        }
        cursor = next;
    }
    if pass.ctx.dry_run {
        pass.record(counted, started).await?;
    }
    Ok(PhaseEnd::Done)
}

/// A connection to the queue's Redis and its key layout; `None` if this
/// engine was given no queue.
async fn redis(pass: &Pass<'_, '_>) -> anyhow::Result<Option<(RedisConnection, Layout)>> {
    let Some(queue) = &pass.ctx.queue else {
        return Ok(None);
    };
    // A Redis that does not answer is worth a retry: the error goes up.
    let conn = queue.target.connect(Timeouts::response(std::time::Duration::from_secs(5))).await?;
    Ok(Some((conn, queue.layout.clone())))
}

/// An engine without a queue (one built in code without
/// `Engine::with_queue`) will not get one by retrying: the job fails.
fn no_queue() -> PhaseEnd {
    PhaseEnd::Refused("cannot prune the queue's Redis keys: this engine has no queue (Engine::with_queue)".to_owned())
}
