//! Step 1 of a row batch: the next page of candidates, read without a
//! transaction or a lock, and a look at their files.
//!
//! The page is only a list of ids to try: the batch transaction locks the
//! rows and re-checks everything that matters. The paths seen here only say
//! which file was inspected; a row whose path changed since is tried again.

use std::collections::HashMap;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{ClaimArg, RowSelector};
use crate::jobs::context::RunContext;
use crate::storage::{Inspection, RelativePath};

/// Candidate ids in ascending order, with what their files looked like.
pub(super) struct Page {
    pub ids: Vec<i64>,
    /// The cursor once this page is done; `None` for a page of rows tried
    /// again at the end of the phase (the cursor stays where it is).
    pub last: Option<i64>,
    /// No page follows this one (a short page of a selector whose short
    /// page is its last).
    pub closing: bool,
    /// The path each row had when paged, and its file's inspection. A row
    /// whose path does not parse has none (it becomes an error item).
    pub files: HashMap<i64, (String, Inspection)>,
}

/// Reads pages after `after` and hands them to the committer, one ahead.
pub(super) async fn run(
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    mut after: i64,
    page_size: usize,
    to_commit: mpsc::Sender<Page>,
    halt: CancellationToken,
) -> anyhow::Result<()> {
    loop {
        let Ok(slot) = to_commit.reserve().await else { return Ok(()) };
        if halt.is_cancelled() {
            return Ok(());
        }
        let query = sqlx::query_as::<_, (i64, String)>(selector.page).bind(after).bind(page_size as i64);
        let rows = match &selector.arg {
            ClaimArg::Time(at) => query.bind(at).fetch_all(ctx.pool).await?,
            ClaimArg::Text(text) => query.bind(text).fetch_all(ctx.pool).await?,
        };
        let Some(&(last, _)) = rows.last() else { return Ok(()) };
        after = last;
        // A short page was the last one: asking again would only return
        // nothing (a session job's one page saves a query this way). Rows
        // that become candidates after the query are a later run's, as
        // they would be after any last page.
        let short = selector.short_page_is_last && rows.len() < page_size;
        let mut page = inspect(ctx, rows, Some(last)).await;
        page.closing = short;
        slot.send(page);
        if short {
            return Ok(());
        }
    }
}

/// A page of the given ids (rows tried again), with their current paths.
pub(super) async fn fetch(ctx: &RunContext<'_>, ids: &[i64]) -> anyhow::Result<Page> {
    let rows: Vec<(i64, String)> = sqlx::query_as("SELECT id, storage_path FROM images WHERE id = ANY($1) ORDER BY id")
        .bind(ids)
        .fetch_all(ctx.pool)
        .await?;
    let mut page = inspect(ctx, rows, None).await;
    // Ids whose rows are gone stay in the page: the batch finds nothing to
    // lock for them and lets them go.
    page.ids = ids.to_vec();
    Ok(page)
}

async fn inspect(ctx: &RunContext<'_>, rows: Vec<(i64, String)>, last: Option<i64>) -> Page {
    let ids = rows.iter().map(|(id, _)| *id).collect();
    let valid: Vec<(i64, String, RelativePath)> =
        rows.into_iter().filter_map(|(id, raw)| RelativePath::parse(&raw).ok().map(|path| (id, raw, path))).collect();
    let inspections = ctx.storage.inspect_many(valid.iter().map(|(_, _, path)| path.clone()).collect()).await;
    let files = valid.into_iter().zip(inspections).map(|((id, raw, _), found)| (id, (raw, found))).collect();
    Page { ids, last, closing: false, files }
}
