//! `cleanup_old_results`: result images of tasks that completed or failed
//! more than `days_old` days before the job's reference time. The task rows
//! stay; `ON DELETE SET NULL` clears their `result_image_id`.
//!
//! An image is an old result only if every task that uses it, through any of
//! the four columns, is finished and finished before the cutoff: a newer
//! task, or a pending one, that shares the image keeps it (decided on the
//! locked tasks, see `TaskRule::OldResult`).
//!
//! Idempotent: a cleared task no longer matches. Resumes from the last
//! committed image id.

use chrono::{DateTime, Duration, Utc};

use super::rows::{ClaimArg, RowSelector, TaskRule};
use crate::job::DaysOld;

pub const OPERATION: &str = "cleanup_old_results";

/// Keyset page over the partial index on finished tasks' result images.
/// `DISTINCT`: two tasks may share one result image.
const PAGE: &str = "SELECT id, storage_path FROM images WHERE id IN (
        SELECT DISTINCT result_image_id FROM face_swap_tasks
        WHERE status IN ('completed', 'failed') AND result_image_id IS NOT NULL
          AND completed_at < $3 AND result_image_id > $1
        ORDER BY result_image_id LIMIT $2)
    ORDER BY id";

/// Locks the images that are still some old task's result; the batch then
/// decides on every task that uses them.
const CLAIM: &str = "SELECT id, storage_path, file_size FROM images
    WHERE id = ANY($1) AND EXISTS (
        SELECT 1 FROM face_swap_tasks t
        WHERE t.result_image_id = images.id
          AND t.status IN ('completed', 'failed') AND t.completed_at < $2)";

pub(crate) fn selector(as_of: DateTime<Utc>, days_old: DaysOld) -> RowSelector {
    let cutoff = cutoff(as_of, days_old);
    RowSelector {
        operation: OPERATION,
        page: PAGE,
        // The limit counts result ids; an image row is what comes back.
        short_page_is_last: false,
        claim: CLAIM,
        arg: ClaimArg::Time(cutoff),
        rule: TaskRule::OldResult { cutoff },
    }
}

pub fn cutoff(as_of: DateTime<Utc>, days_old: DaysOld) -> DateTime<Utc> {
    as_of - Duration::days(i64::from(days_old.get()))
}
