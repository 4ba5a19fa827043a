//! Which walked files rows refer to, by a merge rather than by lookups.
//!
//! The walk yields paths in byte order. Two streams of stored keys come in
//! the same order, read ahead a page at a time from janitor's indexes:
//! every stored path as it is (`janitor_images_storage_path`), and the key of
//! every path that is not already canonical (`janitor_images_noncanonical_path`).
//! A walked path is referenced when either stream holds it: one comparison
//! per step, no query per file. A name that is not ASCII and not already in
//! Unicode NFC has its key computed by Postgres (a lookup), so the key is
//! always the one `janitor_path_key` gives.

use std::collections::VecDeque;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::mpsc;
use unicode_normalization::{is_nfc_quick, IsNormalized};

/// Keys a page holds.
const PAGE: i64 = 10_000;

/// Every stored path, in byte order, after `$1`: a page as one array (one
/// row to decode, not thousands).
const STORED: &str = "SELECT array_agg(storage_path) FROM (SELECT storage_path FROM images
    WHERE storage_path COLLATE \"C\" > $1 ORDER BY storage_path COLLATE \"C\" LIMIT $2) AS page";

/// The keys of non-canonical paths, in byte order, after `$1`, as one array.
const RESPELLED: &str = "SELECT array_agg(key) FROM (SELECT janitor_path_key(storage_path) COLLATE \"C\" AS key
    FROM images
    WHERE janitor_path_key(storage_path) IS DISTINCT FROM storage_path
      AND janitor_path_key(storage_path) COLLATE \"C\" > $1
    ORDER BY 1 LIMIT $2) AS page";

/// One sorted stream of keys, read ahead by a task, consumed by the walk's
/// blocking thread.
struct Sorted {
    page: VecDeque<String>,
    pages: mpsc::Receiver<sqlx::Result<Vec<String>>>,
    ended: bool,
}

impl Sorted {
    fn start(pool: &PgPool, sql: &'static str, after: &str) -> Self {
        let (sender, pages) = mpsc::channel(2);
        tokio::spawn(read_ahead(pool.clone(), sql, after.to_owned(), sender));
        Self { page: VecDeque::new(), pages, ended: false }
    }

    /// Whether the stream holds `path`. Calls come in ascending order, so
    /// everything before `path` is dropped on the way.
    fn contains(&mut self, path: &str) -> sqlx::Result<bool> {
        loop {
            while let Some(front) = self.page.front() {
                match front.as_str().cmp(path) {
                    std::cmp::Ordering::Less => drop(self.page.pop_front()),
                    std::cmp::Ordering::Equal => return Ok(true),
                    std::cmp::Ordering::Greater => return Ok(false),
                }
            }
            if self.ended {
                return Ok(false);
            }
            match self.pages.blocking_recv() {
                Some(Ok(page)) if !page.is_empty() => self.page = page.into(),
                Some(Err(err)) => return Err(err),
                Some(Ok(_)) | None => self.ended = true,
            }
        }
    }
}

async fn read_ahead(
    pool: PgPool,
    sql: &'static str,
    mut after: String,
    sender: mpsc::Sender<sqlx::Result<Vec<String>>>,
) {
    loop {
        let page = sqlx::query_scalar::<_, Option<Vec<String>>>(sql).bind(&after).bind(PAGE).fetch_one(&pool).await;
        let page = page.map(|page| in_byte_order(page.unwrap_or_default()));
        let last = match &page {
            Ok(page) => page.last().cloned(),
            Err(_) => None,
        };
        if sender.send(page).await.is_err() {
            return;
        }
        match last {
            Some(last) => after = last,
            None => return,
        }
    }
}

/// The page in byte order. `array_agg` over an ordered subquery keeps its
/// order in practice, but Postgres does not promise it, and a merge over an
/// unsorted page would miss references: checked, and sorted if need be.
fn in_byte_order(mut page: Vec<String>) -> Vec<String> {
    if !page.is_sorted() {
        page.sort_unstable();
    }
    page
}

/// What the walk asks of the database, from its blocking thread.
pub(super) struct References {
    stored: Sorted,
    respelled: Sorted,
    pool: PgPool,
    runtime: tokio::runtime::Handle,
}

impl References {
    /// Streams starting after `after` (the walk's checkpoint). Call from
    /// inside the runtime.
    pub(super) fn start(pool: &PgPool, after: &str) -> Self {
        Self {
            stored: Sorted::start(pool, STORED, after),
            respelled: Sorted::start(pool, RESPELLED, after),
            pool: pool.clone(),
            runtime: tokio::runtime::Handle::current(),
        }
    }

    /// Whether some row refers to the walked file `path`. Blocking; calls
    /// come in the walk's order.
    pub(super) fn referenced(&mut self, path: &str) -> anyhow::Result<bool> {
        // `|`, not `||`: both streams move on to `path` either way.
        if self.stored.contains(path)? | self.respelled.contains(path)? {
            return Ok(true);
        }
        if path.is_ascii() || is_nfc_quick(path.chars()) == IsNormalized::Yes {
            return Ok(false);
        }
        // Its key differs from its name: ask Postgres, which computes it.
        let paths = [path];
        let lookup =
            tokio::time::timeout(Duration::from_secs(60), crate::jobs::references::referenced(&self.pool, &paths));
        Ok(!self.runtime.block_on(lookup)??.is_empty())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_page_out_of_order_is_put_in_byte_order() {
        let page = ["photos/b", "photos/a", "photos/B", "photos/é"].map(str::to_owned).to_vec();
        assert_eq!(super::in_byte_order(page), ["photos/B", "photos/a", "photos/b", "photos/é"]);
    }
}
