//! Which files rows refer to, under the one normalisation janitor uses for
//! stored paths: `janitor_path_key` (see its migration). A row that spells a
//! file `/photos/a.jpg`, `./photos/a.jpg` or in another Unicode form refers
//! to the file `photos/a.jpg` just as `photos/a.jpg` does.
//!
//! Every lookup goes through janitor's two indexes on `images`: the stored
//! paths in byte order (`COLLATE "C"`), and the keys of the few rows whose
//! path is not already its key.

use std::collections::HashSet;

use crate::storage::RelativePath;

/// Of `$1` (paths relative to the storage root, as found on disk or as a
/// batch recorded them), those that some row refers to: by the exact bytes,
/// or by key. `$2` holds each path's key where janitor knows it without
/// Postgres (see [`RelativePath::ascii_key`]) and NULL where Postgres must
/// compute it, so the function runs only for the rare other names.
const REFERENCED: &str = "SELECT p FROM unnest($1::text[], $2::text[]) AS k(p, given)
    CROSS JOIN LATERAL (SELECT COALESCE(given, janitor_path_key(p)) AS key) AS c
    WHERE EXISTS (SELECT 1 FROM images WHERE storage_path COLLATE \"C\" = p)
       OR (key IS DISTINCT FROM p AND EXISTS (SELECT 1 FROM images WHERE storage_path COLLATE \"C\" = key))
       OR EXISTS (SELECT 1 FROM images
                  WHERE janitor_path_key(storage_path) IS DISTINCT FROM storage_path
                    AND janitor_path_key(storage_path) COLLATE \"C\" = key)";

/// The paths among `paths` that some row refers to.
pub(crate) async fn referenced<'c>(db: impl sqlx::PgExecutor<'c>, paths: &[&str]) -> sqlx::Result<HashSet<String>> {
    if paths.is_empty() {
        return Ok(HashSet::new());
    }
    let keys: Vec<Option<&str>> = paths.iter().map(|path| RelativePath::ascii_key(path)).collect();
    Ok(sqlx::query_scalar(REFERENCED).bind(paths).bind(&keys).fetch_all(db).await?.into_iter().collect())
}
