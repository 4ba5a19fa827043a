//! The guards in front of the orphan sweep. Each one refuses a sweep that
//! could misread the store, because a misread store makes everything look
//! orphaned and that must never mean "delete everything":
//!
//! - the grace period is at least the configured minimum (`min_grace`);
//! - every category folder is a real folder (not missing, not a symlink: an
//!   unmounted volume or a wrong root);
//! - the indexes that tell which files rows refer to exist and are valid;
//! - no row holds a path that cannot be normalised without guessing;
//! - one sweep per storage root at a time (a Postgres advisory lock);
//! - after the complete walk, no more than `max_orphan_ratio` of the files
//!   look orphaned.

use std::time::Duration;

use sqlx::Connection as _;

use crate::jobs::context::RunContext;
use crate::progress::Census;
use crate::storage::CATEGORIES;

/// Whether the indexes the sweep needs are there and valid: the stored
/// paths in byte order, and the keys of non-canonical paths.
const INDEXES: &str = "SELECT
    EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            JOIN pg_am am ON am.oid = c.relam
            WHERE i.indrelid = 'images'::regclass AND i.indisvalid AND i.indisready AND am.amname = 'btree'
              AND i.indpred IS NULL AND i.indexprs IS NULL
              AND i.indkey[0] = (SELECT attnum FROM pg_attribute
                                 WHERE attrelid = 'images'::regclass AND attname = 'storage_path')
              AND i.indcollation[0] = 'pg_catalog.\"C\"'::regcollation),
    EXISTS (SELECT 1 FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
            WHERE i.indrelid = 'images'::regclass AND c.relname = 'janitor_images_noncanonical_path'
              AND i.indisvalid AND i.indisready)";

/// Rows whose path has no safe key (see `janitor_path_key`): how many, and
/// one of them. Served by the index of non-canonical paths.
const UNSAFE: &str = "SELECT count(*), min(storage_path) FROM images
    WHERE janitor_path_key(storage_path) IS DISTINCT FROM storage_path AND janitor_path_key(storage_path) IS NULL";

/// The first reason to refuse this sweep before it reads anything.
pub(super) async fn refusal(ctx: &RunContext<'_>, min_age: Duration) -> anyhow::Result<Option<String>> {
    let floor = ctx.settings.min_grace;
    if min_age < floor {
        return Ok(Some(format!(
            "refusing: a grace period of {} is shorter than the minimum of {}; a file the application is still \
             writing, before it commits its row, would look orphaned. Set JANITOR_MIN_GRACE (--min-grace) lower \
             to allow it",
            humanize(min_age),
            humanize(floor)
        )));
    }
    if let Some(reason) = unusable_category(ctx) {
        return Ok(Some(reason));
    }
    if let Some(reason) = missing_index(ctx).await? {
        return Ok(Some(reason));
    }
    Ok(unsafe_paths(ctx).await?)
}

/// A missing or odd category folder means a wrong or unmounted storage
/// root, never "everything in it is gone": refuse rather than sweep.
fn unusable_category(ctx: &RunContext<'_>) -> Option<String> {
    CATEGORIES.iter().find_map(|category| {
        ctx.storage.folder_usable(category).err().map(|why| {
            format!(
                "refusing to sweep orphans: category folder {} is unusable ({why}); is JANITOR_STORAGE_ROOT right \
                 and mounted?",
                ctx.storage.root().join(category).display()
            )
        })
    })
}

async fn missing_index(ctx: &RunContext<'_>) -> sqlx::Result<Option<String>> {
    let (by_path, noncanonical): (bool, bool) = sqlx::query_as(INDEXES).fetch_one(ctx.pool).await?;
    let create = if !by_path {
        "CREATE INDEX CONCURRENTLY janitor_images_storage_path ON images (storage_path COLLATE \"C\")"
    } else if !noncanonical {
        "CREATE INDEX CONCURRENTLY janitor_images_noncanonical_path ON images ((janitor_path_key(storage_path)) \
         COLLATE \"C\") WHERE janitor_path_key(storage_path) IS DISTINCT FROM storage_path"
    } else {
        return Ok(None);
    };
    Ok(Some(format!(
        "refusing to sweep orphans: an index it needs on images is missing or invalid, so it could not tell \
         cheaply which files rows refer to. Run `janitor migrate`, or (after dropping an invalid index of that \
         name) {create};"
    )))
}

/// Refuses while any row's path cannot be normalised without guessing.
pub(super) async fn unsafe_paths(ctx: &RunContext<'_>) -> sqlx::Result<Option<String>> {
    let (count, example): (i64, Option<String>) = sqlx::query_as(UNSAFE).fetch_one(ctx.pool).await?;
    if count == 0 {
        return Ok(None);
    }
    Ok(Some(format!(
        "refusing to sweep orphans: {} rows have a storage_path that cannot be normalised safely (for example \
         {:?}): a `..` component, a backslash or control character, or a category folder that is not at its start. \
         Janitor never guesses which file such a row means; fix those rows first",
        group_thousands(count as u64),
        example.unwrap_or_default()
    )))
}

/// Whether the server session running this statement holds the sweep lock
/// of key `$1` (an advisory lock on one bigint shows its high and low halves
/// as `classid` and `objid`).
const HELD_HERE: &str = "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted
    AND pid = pg_backend_pid() AND objsubid = 1
    AND ((classid::bigint << 32) | objid::bigint) = hashtextextended($1, 0))";

/// Holds the storage root's sweep lock until released (or dropped). The
/// lock is a transaction-level advisory lock, taken in a transaction that
/// stays open on a connection taken out of the pool for the whole sweep, so
/// it goes away with the transaction: at release, or when the process dies
/// and its connection closes.
///
/// A transaction rather than a session, because it holds through a
/// transaction pooler (PgBouncer in transaction mode) as well: the pooler
/// keeps one server connection for a client for as long as its transaction
/// is open, where a session-level lock would be left behind on whichever
/// pooled server connection took it. The transaction holds no snapshot
/// while idle and writes nothing, so it holds back neither vacuum nor
/// anyone's rows; it switches `idle_in_transaction_session_timeout` (and
/// Postgres 17's `transaction_timeout`) off for itself only (`SET LOCAL`),
/// as the walk between two checks can be long. A pooler's own limit on a
/// transaction (PgBouncer's `idle_transaction_timeout`, off by default)
/// would end it: the sweep then stops at its next check.
///
/// It is taken only if no other session holds it (`pg_try_advisory_xact_lock`
/// conflicts with a session-level lock of the same key, so an older janitor
/// that takes the session-level lock is excluded too, and the not re-entrant
/// check below covers a session that holds it itself). Before every batch the
/// session that answers must still hold it, or the sweep stops. What it
/// covers: from the walk to the last batch, the re-check, re-stat, move,
/// check again and move back of every batch (see `sweep`).
pub(super) struct SweepLock {
    connection: sqlx::PgConnection,
    key: String,
}

impl SweepLock {
    /// Proves the lock is still held by the session that answers. A
    /// connection that Postgres ended (`pg_terminate_backend`, a restart)
    /// took the lock with it, and another sweep of the root may have started.
    pub(super) async fn still_held(&mut self) -> anyhow::Result<()> {
        let held: bool = sqlx::query_scalar(&format!("SELECT {HELD_HERE}"))
            .bind(&self.key)
            .fetch_one(&mut self.connection)
            .await
            .map_err(|err| {
                anyhow::anyhow!("lost the storage root's sweep lock (its connection ended: {err}); stopping the sweep")
            })?;
        if !held {
            anyhow::bail!(
                "the storage root's sweep lock is not held by this database session any more; stopping the sweep"
            );
        }
        Ok(())
    }

    /// Releases the lock at once, by ending its transaction. (Only dropping
    /// the connection would leave it held until the server notices the closed
    /// socket, and a sweep that resumes right after could find its own root
    /// still locked.)
    pub(super) async fn release(mut self) {
        if let Err(err) = sqlx::query("ROLLBACK").execute(&mut self.connection).await {
            tracing::debug!(error = %err, "could not end the sweep lock's transaction; it goes with its connection");
        }
        let _ = self.connection.close().await;
    }
}

/// Takes the sweep lock of this storage root, or `None` if another sweep
/// holds it.
pub(super) async fn sweep_lock(ctx: &RunContext<'_>) -> anyhow::Result<Option<SweepLock>> {
    let root = std::fs::canonicalize(ctx.storage.root()).unwrap_or_else(|_| ctx.storage.root().to_owned());
    let key = format!("janitor-orphan-sweep:{}", root.display());
    let mut connection = ctx.pool.acquire().await?.detach();
    // Not re-entrant: a session that already holds it (one whose
    // session-level lock an older janitor left) does not hand it out again.
    let take =
        format!("SELECT CASE WHEN {HELD_HERE} THEN false ELSE pg_try_advisory_xact_lock(hashtextextended($1, 0)) END");
    let locked = async {
        sqlx::query("BEGIN").execute(&mut connection).await?;
        sqlx::query("SET LOCAL idle_in_transaction_session_timeout = 0").execute(&mut connection).await?;
        // Postgres 17 can also end a transaction by its age.
        sqlx::query(
            "SELECT set_config('transaction_timeout', '0', true)
             WHERE current_setting('server_version_num')::int >= 170000",
        )
        .execute(&mut connection)
        .await?;
        sqlx::query_scalar::<_, bool>(&take).bind(&key).fetch_one(&mut connection).await
    }
    .await;
    match locked {
        Ok(true) => Ok(Some(SweepLock { connection, key })),
        Ok(false) => {
            let _ = connection.close().await;
            Ok(None)
        }
        Err(err) => {
            let _ = connection.close().await;
            Err(err.into())
        }
    }
}

/// The refusal, if the complete walk found too large a share of orphans.
/// An empty store passes (there is nothing to delete); a store whose every
/// file looks orphaned does not.
pub(super) fn too_many(ctx: &RunContext<'_>, census: Census) -> Option<String> {
    let ratio = ctx.settings.max_orphan_ratio;
    let Census { files, candidates, .. } = census;
    if candidates == 0 || candidates as f64 <= ratio * files as f64 {
        return None;
    }
    let share = candidates as f64 * 100.0 / files.max(1) as f64;
    Some(format!(
        "refusing: {share:.0}% of {} files look orphaned ({} of them), more than the {:.0}% allowed; \
         is JANITOR_STORAGE_ROOT or DATABASE_URL wrong? rerun with --max-orphan-ratio to override",
        group_thousands(files),
        group_thousands(candidates),
        ratio * 100.0
    ))
}

fn humanize(duration: Duration) -> String {
    humantime_like(duration.as_secs())
}

/// `90` → `1m 30s`: the units of the command line's durations.
fn humantime_like(mut secs: u64) -> String {
    if secs == 0 {
        return "0s".to_owned();
    }
    let mut parts = Vec::new();
    for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
        if secs >= size {
            parts.push(format!("{}{unit}", secs / size));
            secs %= size;
        }
    }
    parts.join(" ")
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

    #[test]
    fn durations_read_like_the_command_line() {
        assert_eq!(super::humantime_like(600), "10m");
        assert_eq!(super::humantime_like(90_061), "1d 1h 1m 1s");
        assert_eq!(super::humantime_like(0), "0s");
    }
}
