//! The guards in front of the orphan sweep, for a misconfigured deployment
//! (a wrong `JANITOR_STORAGE_ROOT` or `DATABASE_URL`, an unmounted volume):
//! such a deployment makes everything look orphaned, and it must never mean
//! "delete everything".
//!
//! - Every category folder must be a real directory.
//! - One sweep per storage root at a time (a Postgres advisory lock).
//! - Before deleting anything, a survey counts the candidates; if they are
//!   more than `max_orphan_ratio` of the files scanned, nothing is deleted.

use std::time::SystemTime;

use sqlx::Connection as _;

use super::orphaned::{plan, walk};
use crate::engine::RunContext;
use crate::storage::CATEGORIES;

/// A missing or odd category folder means a wrong or unmounted storage
/// root, never "everything in it is gone": refuse rather than sweep.
pub(super) fn unusable_category(ctx: &RunContext<'_>) -> Option<String> {
    let root = ctx.storage.root();
    CATEGORIES.iter().find_map(|category| {
        let path = root.join(category);
        match std::fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() => None,
            Ok(_) => Some(format!(
                "refusing to sweep orphans: {} is not a directory (symlinked category folders are not followed)",
                path.display()
            )),
            Err(err) => Some(format!(
                "refusing to sweep orphans: category folder {} is unusable ({err}); is JANITOR_STORAGE_ROOT right and mounted?",
                path.display()
            )),
        }
    })
}

/// Holds the storage root's sweep lock until dropped. The lock is a
/// session-level advisory lock on a connection taken out of the pool, so it
/// goes away with the connection: on drop, or if the process dies.
pub(super) struct SweepLock {
    _connection: sqlx::PgConnection,
}

/// Takes the sweep lock of this storage root, or `None` if another sweep
/// holds it.
pub(super) async fn sweep_lock(ctx: &RunContext<'_>) -> anyhow::Result<Option<SweepLock>> {
    let root = std::fs::canonicalize(ctx.storage.root()).unwrap_or_else(|_| ctx.storage.root().to_owned());
    let key = format!("janitor-orphan-sweep:{}", root.display());
    let mut connection = ctx.engine.pool.acquire().await?.detach();
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(&key)
        .fetch_one(&mut connection)
        .await?;
    if !locked {
        let _ = connection.close().await;
        return Ok(None);
    }
    Ok(Some(SweepLock { _connection: connection }))
}

/// Walks the whole store once, deleting nothing: (files scanned, orphan
/// candidates).
pub(super) async fn survey(ctx: &RunContext<'_>, grace_ends: SystemTime) -> anyhow::Result<(u64, u64)> {
    let (mut batches, walker) = walk(ctx, None);
    let (mut files, mut orphans) = (0u64, 0u64);
    while let Some(items) = batches.recv().await {
        if ctx.control.cancel.is_cancelled() {
            break;
        }
        files += items.iter().filter(|item| matches!(item, crate::storage::ScanItem::File(_))).count() as u64;
        let (pending, _) = plan(ctx, &items, grace_ends).await?;
        orphans += pending.files.len() as u64;
    }
    drop(batches);
    walker.await?;
    Ok((files, orphans))
}

/// The refusal, if the survey found too large a share of orphans.
pub(super) fn too_many(ctx: &RunContext<'_>, (files, orphans): (u64, u64)) -> Option<String> {
    let ratio = ctx.engine.settings.max_orphan_ratio;
    if files == 0 || orphans as f64 <= ratio * files as f64 {
        return None;
    }
    let share = orphans as f64 * 100.0 / files as f64;
    Some(format!(
        "refusing: {share:.0}% of {} files look orphaned ({} of them), more than the {:.0}% allowed; \
         is JANITOR_STORAGE_ROOT or DATABASE_URL wrong? rerun with --max-orphan-ratio to override",
        group_thousands(files),
        group_thousands(orphans),
        ratio * 100.0
    ))
}

fn group_thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_are_grouped() {
        assert_eq!(super::group_thousands(1_204_331), "1,204,331");
        assert_eq!(super::group_thousands(999), "999");
    }
}
