//! Step 3 of a row batch: one transaction that locks the candidates and the
//! tasks that use them, decides, deletes the free rows and records their
//! files as an unlink intent, with the counters and the cursor.
//!
//! Why each lock is needed, and why the decision holds at commit, is written
//! at the top of `rows/mod.rs`. In short: the rows are locked
//! `FOR UPDATE SKIP LOCKED` (no new task can reference them), then every task
//! that references them `FOR SHARE SKIP LOCKED` (none can change its status
//! or columns), and the decision is read from those locked versions.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use super::intents::{self, Intent, Unlinked};
use super::pager::Page;
use super::{ClaimArg, RowSelector};
use crate::jobs::context::RunContext;
use crate::progress::{Counters, Cursor, ErrorItem, Progress};
use crate::results::{JobRecord, Listeners};
use crate::storage::{Inspection, RelativePath};

/// What the tasks that use an image must allow for it to be deleted.
#[derive(Debug, Clone)]
pub(crate) enum TaskRule {
    /// No task that uses it is active (expired and session cleanups).
    NotInUse,
    /// It is an old result: every task that uses it, through any column, is
    /// finished and finished before the cutoff, and one of them has it as
    /// its result (old-results cleanup).
    OldResult { cutoff: DateTime<Utc> },
}

/// How often a batch that lost a deadlock to another transaction is retried
/// before the error goes up.
const DEADLOCK_RETRIES: u32 = 5;

#[derive(Debug, sqlx::FromRow)]
pub(super) struct Candidate {
    pub id: i64,
    pub storage_path: String,
    pub file_size: i64,
}

/// Every task that references any of `$1`, with the version this
/// transaction holds `FOR SHARE` (`held`), or, for a task another
/// transaction holds right now, only the columns seen in the snapshot.
/// Locking the tasks is what makes the decision hold until the commit: the
/// application's `UPDATE face_swap_tasks SET status = 'pending'` waits for
/// it. `SKIP LOCKED` (rather than waiting) keeps janitor from ever waiting
/// on the application while it holds image locks; a skipped task's images
/// are tried again at the end of the phase.
const TASKS: &str = "WITH refs AS MATERIALIZED (
        SELECT id, husband_photo_id, wife_photo_id, template_id, result_image_id
        FROM face_swap_tasks
        WHERE husband_photo_id = ANY($1) OR wife_photo_id = ANY($1)
           OR template_id = ANY($1) OR result_image_id = ANY($1)
    ), held AS (
        SELECT id, status, completed_at, husband_photo_id, wife_photo_id, template_id, result_image_id
        FROM face_swap_tasks WHERE id IN (SELECT id FROM refs)
        LOCKING
    )
    SELECT h.id IS NOT NULL AS held, h.status, h.completed_at,
           CASE WHEN h.id IS NULL THEN r.husband_photo_id ELSE h.husband_photo_id END AS husband,
           CASE WHEN h.id IS NULL THEN r.wife_photo_id ELSE h.wife_photo_id END AS wife,
           CASE WHEN h.id IS NULL THEN r.template_id ELSE h.template_id END AS template,
           CASE WHEN h.id IS NULL THEN r.result_image_id ELSE h.result_image_id END AS result
    FROM refs r LEFT JOIN held h ON h.id = r.id";

/// Deletes the batch's free rows `$1`, or raises `JN001` if the foreign keys
/// from the tasks to the images that the decision relies on are missing
/// (an uncorrelated subquery: checked once per statement).
const DELETE: &str = "DELETE FROM images WHERE id = ANY($1) AND (SELECT janitor_require_task_keys())";

/// The keys of non-ASCII paths (`$1`), as Postgres computes them (NULL for
/// a path it cannot normalise). An ASCII path that parsed is its own key.
const KEYS: &str = "SELECT janitor_path_key(p) FROM unnest($1::text[]) WITH ORDINALITY AS k(p, n) ORDER BY n";

/// For the keys `$1`: how many rows store each one as their exact path
/// (`janitor_images_storage_path`), and, with a NULL count, each key that a
/// row spells another way (`janitor_images_noncanonical_path`, normally
/// empty) unless it is one of the batch's rows `$2`. Counts, not rows: a
/// path that thousands of rows share costs an index scan, not a transfer.
/// `(SELECT $1)` hides the array from the planner, which would otherwise
/// trade the index probes for a sequential scan of `images` on a custom
/// plan.
const REFERRERS: &str = "SELECT storage_path, count(*) FROM images
        WHERE storage_path COLLATE \"C\" = ANY((SELECT $1)::text[])
        GROUP BY storage_path
    UNION ALL
    SELECT k, NULL FROM unnest($1::text[]) AS k
    WHERE EXISTS (SELECT 1 FROM images o
                  WHERE janitor_path_key(o.storage_path) IS DISTINCT FROM o.storage_path
                    AND janitor_path_key(o.storage_path) COLLATE \"C\" = k AND o.id <> ALL($2))";

#[derive(Debug, sqlx::FromRow)]
struct TaskRef {
    held: bool,
    status: Option<String>,
    completed_at: Option<DateTime<Utc>>,
    husband: Option<i64>,
    wife: Option<i64>,
    template: Option<i64>,
    result: Option<i64>,
}

impl TaskRef {
    fn uses(&self, image: i64) -> bool {
        [self.husband, self.wife, self.template, self.result].contains(&Some(image))
    }

    /// Only `completed` and `failed` are finished; any other status, known
    /// (`pending`, `processing`) or not, protects the images.
    fn finished(&self) -> bool {
        matches!(self.status.as_deref(), Some("completed" | "failed"))
    }
}

/// The batch's decisions.
#[derive(Debug, Default)]
struct Decided {
    free: Vec<(Candidate, RelativePath)>,
    /// Used by an active task, or sharing its file with a row that stays.
    skipped: i64,
    /// The skipped rows with why, for a dry run's sample.
    skipped_items: Vec<crate::sample::SampleItem>,
    /// Whether to keep `skipped_items` (a dry run): a real run has no use
    /// for them and does not build them.
    sampling: bool,
    errors: Vec<ErrorItem>,
    /// Held by another transaction (the row, or a task that uses it): tried
    /// again at the end of the phase.
    deferred: Vec<i64>,
}

/// What a committed batch leaves to do.
#[derive(Default)]
pub(super) struct Committed {
    /// The files to unlink.
    pub intent: Option<Intent>,
    /// The job's end, if this batch was its last and ended it in its own
    /// transaction (see [`RunContext::ends_in_batch`]).
    pub ended: Option<JobRecord>,
}

/// Runs one batch to its commit, retrying it if it loses a deadlock (two
/// cleanups locking tasks that share images).
pub(super) async fn commit(
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    progress: &mut Progress,
    page: &Page,
    unlinked: Vec<Unlinked>,
) -> anyhow::Result<Committed> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        match try_commit(ctx, selector, progress, page, &unlinked).await {
            Err(err) if attempt < DEADLOCK_RETRIES && lost_a_deadlock(&err) => {
                tracing::debug!(attempt, "batch lost a deadlock; retrying it");
                tokio::time::sleep(Duration::from_millis(20 * u64::from(attempt))).await;
            }
            other => return other,
        }
    }
}

fn lost_a_deadlock(err: &anyhow::Error) -> bool {
    let code = err.downcast_ref::<sqlx::Error>().and_then(|e| e.as_database_error()).and_then(|e| e.code());
    matches!(code.as_deref(), Some("40P01" | "40001"))
}

async fn try_commit(
    ctx: &RunContext<'_>,
    selector: &RowSelector,
    progress: &mut Progress,
    page: &Page,
    unlinked: &[Unlinked],
) -> anyhow::Result<Committed> {
    let started = std::time::Instant::now();
    let mut tx = ctx.pool.begin().await?;
    // A dry run takes no locks: it must not hold up the application.
    let lock = !ctx.dry_run;
    let rows = claim(&mut tx, selector, &page.ids, lock).await?;
    let claimed: Vec<i64> = rows.iter().map(|row| row.id).collect();
    let tasks: Vec<TaskRef> = if claimed.is_empty() {
        Vec::new()
    } else {
        let sql = TASKS.replace("LOCKING", if lock { "FOR SHARE SKIP LOCKED" } else { "" });
        sqlx::query_as(&sql).bind(&claimed).fetch_all(&mut *tx).await?
    };
    let mut decided = decide(selector, rows, &tasks, page, ctx.dry_run);
    let unclaimed: Vec<i64> = {
        let claimed: HashSet<i64> = claimed.into_iter().collect();
        page.ids.iter().copied().filter(|id| !claimed.contains(id)).collect()
    };
    // Of the rows not claimed, those that still qualify were held by another
    // transaction; the rest no longer qualify and are let go.
    decided.deferred.extend(claim(&mut tx, selector, &unclaimed, false).await?.into_iter().map(|row| row.id));
    if let Some(left) = ctx.remaining(progress) {
        decided.free.truncate(usize::try_from(left).unwrap_or(usize::MAX));
    }
    keep_shared(&mut tx, &mut decided).await?;

    let mut next = progress.clone();
    let intent = if ctx.dry_run || decided.free.is_empty() {
        None
    } else {
        let ids: Vec<i64> = decided.free.iter().map(|(row, _)| row.id).collect();
        // What covers the decision and this delete: the rows' `FOR UPDATE`
        // (a new task's key check waits for it), the tasks' `FOR SHARE` (a
        // status change waits for the commit), and the foreign keys that make
        // the first of these hold, checked here by `janitor_require_task_keys`
        // (SQLSTATE `JN001` if one is missing) while the task lookup holds
        // `face_swap_tasks` in ACCESS SHARE mode, so no key can be dropped
        // before the commit (switching its triggers off is an
        // administrator's act this lock does not exclude; the next batch
        // refuses). See the module comment of `rows`.
        sqlx::query(DELETE).bind(&ids).execute(&mut *tx).await?;
        let files = decided.free.iter().map(|(row, path)| (row.id, path.clone())).collect();
        Some(intents::record(&mut tx, ctx, selector, &mut next, files).await?)
    };
    let delta = Counters {
        deleted: decided.free.len() as i64,
        bytes: decided.free.iter().map(|(row, _)| row.file_size).sum(),
        skipped: decided.skipped,
        errors: decided.errors.len() as i64,
    };
    let cursor = page.last.map_or_else(|| next.checkpoint.cursor.clone(), Cursor::AfterId);
    next.record(delta, decided.errors, cursor);
    if ctx.dry_run {
        // What the plan page shows: the first rows it would take, and those it spares.
        let would = decided
            .free
            .iter()
            .map(|(row, _)| crate::sample::SampleItem::new(Some(row.id), &row.storage_path).size(row.file_size));
        next.checkpoint.sample.add(selector.operation, would, decided.skipped_items);
    }
    next.defer(decided.deferred);
    intents::settle(&mut next, unlinked);
    next.observe(started.elapsed());
    // A job that is this one phase ends here when this batch leaves it
    // nothing to do: the page was the last, and no row waits to be tried
    // again (or the job's limit is reached). Its end commits with its last
    // batch, so a small job (a logout's) waits for one WAL flush, not two.
    // Listeners hear of it once its files are unlinked (`settle_ended`).
    // Rows tried again at the end of the phase are never on such a page.
    let nothing_left = next.checkpoint.recheck.is_empty() || ctx.remaining(&next) == Some(0);
    let ends = ctx.ends_in_batch && page.closing && nothing_left && !ctx.cancel.is_cancelled();
    let ended = if ends {
        // A real run's listeners hear of the end once every file this run
        // committed is unlinked, this batch's and the one before's alike; a
        // dry run unlinks nothing.
        let listeners = if ctx.dry_run { Listeners::Tell } else { Listeners::Later };
        Some(crate::results::finish_in(&mut tx, ctx.lease, &next, "completed", None, listeners).await?)
    } else {
        crate::results::save_progress(&mut tx, ctx.lease, &next).await?;
        None
    };
    // The commit is synchronous (the session default): the files are
    // unlinked right after it, so it must not be lost in a crash.
    tx.commit().await?;
    *progress = next;
    progress.saved();
    ctx.batch_done(progress, started.elapsed());
    Ok(Committed { intent, ended })
}

/// The candidates among `ids` that still qualify, locked unless `lock` is
/// false. `SKIP LOCKED`: a row another transaction holds is passed over (a
/// concurrent run of the same operation, or a task insert in flight, whose
/// foreign-key check holds `FOR KEY SHARE` on it).
async fn claim(
    conn: &mut PgConnection,
    selector: &RowSelector,
    ids: &[i64],
    lock: bool,
) -> sqlx::Result<Vec<Candidate>> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = if lock { format!("{} FOR UPDATE SKIP LOCKED", selector.claim) } else { selector.claim.to_owned() };
    let query = sqlx::query_as::<_, Candidate>(&sql).bind(ids);
    match &selector.arg {
        ClaimArg::Time(at) => query.bind(at).fetch_all(conn).await,
        ClaimArg::Text(text) => query.bind(text).fetch_all(conn).await,
    }
}

/// Decides each claimed row from the tasks that use it, as this transaction
/// holds them, and from what its file looked like.
fn decide(selector: &RowSelector, rows: Vec<Candidate>, tasks: &[TaskRef], page: &Page, sampling: bool) -> Decided {
    let mut decided = Decided { sampling, ..Decided::default() };
    for row in rows {
        let users: Vec<&TaskRef> = tasks.iter().filter(|task| task.uses(row.id)).collect();
        if users.iter().any(|task| !task.held) {
            decided.deferred.push(row.id);
            continue;
        }
        if users.iter().any(|task| !task.finished()) {
            decided.skipped += 1;
            if decided.sampling {
                let active = users.iter().filter(|task| !task.finished()).map(|task| task.status.as_deref());
                let reason = crate::sample::in_use_reason(active);
                decided
                    .skipped_items
                    .push(crate::sample::SampleItem::new(Some(row.id), &row.storage_path).reason(reason));
            }
            continue;
        }
        if !selector.rule.allows(row.id, &users) {
            continue;
        }
        let path = match RelativePath::parse(&row.storage_path) {
            Ok(path) => path,
            Err(err) => {
                decided.errors.push(error_item(selector, &row, err.to_string()));
                continue;
            }
        };
        match page.files.get(&row.id) {
            Some((seen, Inspection::Unremovable(message))) if *seen == row.storage_path => {
                decided.errors.push(error_item(selector, &row, message.clone()));
            }
            Some((seen, _)) if *seen == row.storage_path => decided.free.push((row, path)),
            // Its path changed since it was paged (or its file could not be
            // inspected): try it again later.
            _ => decided.deferred.push(row.id),
        }
    }
    decided
}

impl TaskRule {
    fn allows(&self, image: i64, users: &[&TaskRef]) -> bool {
        match self {
            TaskRule::NotInUse => true,
            TaskRule::OldResult { cutoff } => {
                let old = |task: &&&TaskRef| task.finished() && task.completed_at.is_some_and(|at| at < *cutoff);
                users.iter().all(|task| old(&task)) && users.iter().any(|task| old(&task) && task.result == Some(image))
            }
        }
    }
}

/// Moves the free rows whose file another row refers to, under any
/// spelling (`janitor_path_key`), to the skipped ones. Every row outside the
/// free set counts as staying (skipped, refused, deferred, or past the job's
/// limit), so two free rows with one file are kept together whenever a
/// third row refers to it.
async fn keep_shared(conn: &mut PgConnection, decided: &mut Decided) -> sqlx::Result<()> {
    if decided.free.is_empty() {
        return Ok(());
    }
    let keys = keys(conn, &decided.free).await?;
    let ids: Vec<i64> = decided.free.iter().map(|(row, _)| row.id).collect();
    let known: Vec<&str> = keys.iter().flatten().map(String::as_str).collect();
    let referrers: Vec<(String, Option<i64>)> =
        sqlx::query_as(REFERRERS).bind(&known).bind(&ids).fetch_all(&mut *conn).await?;
    // The batch's own rows that store a key as their exact path: a key
    // with more such rows in the table is referred to by a row that stays.
    let mut own: HashMap<&str, i64> = HashMap::new();
    for ((row, _), key) in decided.free.iter().zip(&keys) {
        if key.as_deref() == Some(row.storage_path.as_str()) {
            *own.entry(row.storage_path.as_str()).or_default() += 1;
        }
    }
    let kept: HashSet<String> = referrers
        .into_iter()
        .filter(|(key, count)| count.is_none_or(|count| count > own.get(key.as_str()).copied().unwrap_or(0)))
        .map(|(key, _)| key)
        .collect();
    // What this covers: the rows committed when the lookup runs, in the
    // batch's transaction. No lock stands for "no other row names this
    // file", so a row inserted after it that names one of the batch's files
    // is not seen (as before this check was batched); the batch's own rows
    // are locked, and a task cannot reference them.
    let before = decided.free.len();
    let mut keys = keys.into_iter();
    // A row without a key (Postgres cannot normalise its path) stays too.
    decided.free.retain(|(row, _)| {
        let why = match keys.next().flatten() {
            Some(key) if !kept.contains(&key) => return true,
            Some(_) => "another row refers to its file",
            None => "its path has no normal form",
        };
        if decided.sampling {
            decided.skipped_items.push(crate::sample::SampleItem::new(Some(row.id), &row.storage_path).reason(why));
        }
        false
    });
    decided.skipped += (before - decided.free.len()) as i64;
    Ok(())
}

/// Each free row's key, in order: an ASCII path is its own (see
/// [`RelativePath::ascii_key`]); Postgres computes the others, so that the
/// key is always the one `janitor_path_key` gives, whatever its Unicode
/// version.
async fn keys(conn: &mut PgConnection, free: &[(Candidate, RelativePath)]) -> sqlx::Result<Vec<Option<String>>> {
    let known: Vec<Option<&str>> = free.iter().map(|(_, path)| RelativePath::ascii_key(path.as_str())).collect();
    let others: Vec<&str> =
        free.iter().zip(&known).filter(|(_, key)| key.is_none()).map(|((_, path), _)| path.as_str()).collect();
    let computed: Vec<Option<String>> = if others.is_empty() {
        Vec::new()
    } else {
        sqlx::query_scalar(KEYS).bind(&others).fetch_all(&mut *conn).await?
    };
    let mut computed = computed.into_iter();
    Ok(known.into_iter().map(|key| key.map_or_else(|| computed.next().flatten(), |key| Some(key.to_owned()))).collect())
}

fn error_item(selector: &RowSelector, row: &Candidate, message: String) -> ErrorItem {
    ErrorItem {
        image_id: Some(row.id),
        path: row.storage_path.clone(),
        error: message,
        operation: selector.operation.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(status: &str, completed_days_ago: Option<i64>, result: Option<i64>, husband: Option<i64>) -> TaskRef {
        TaskRef {
            held: true,
            status: Some(status.to_owned()),
            completed_at: completed_days_ago.map(|days| Utc::now() - chrono::Duration::days(days)),
            husband,
            wife: None,
            template: None,
            result,
        }
    }

    #[test]
    fn an_old_result_needs_every_user_finished_before_the_cutoff() {
        let rule = TaskRule::OldResult { cutoff: Utc::now() - chrono::Duration::days(30) };
        let old = task("completed", Some(40), Some(7), None);
        assert!(rule.allows(7, &[&old]));
        // A newer task shares it, through another column.
        let recent = task("completed", Some(2), None, Some(7));
        assert!(!rule.allows(7, &[&old, &recent]));
        // Old, but nobody has it as a result.
        let other_column = task("failed", Some(40), None, Some(7));
        assert!(!rule.allows(7, &[&other_column]));
        // Finished without a completion time is not old.
        let undated = task("completed", None, Some(7), None);
        assert!(!rule.allows(7, &[&undated]));
    }

    #[test]
    fn only_completed_and_failed_tasks_are_finished() {
        for (status, finished) in
            [("completed", true), ("failed", true), ("pending", false), ("processing", false), ("retrying", false)]
        {
            assert_eq!(task(status, None, None, None).finished(), finished, "{status}");
        }
    }
}
