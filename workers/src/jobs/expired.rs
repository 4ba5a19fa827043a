//! `cleanup_expired_images`: temporary images whose `expires_at` has passed.
//!
//! Idempotent: a rerun finds only what is left. Resumes from the last
//! committed image id. The cutoff is the job's reference time, fixed at its
//! first start, so a resumed job does not widen its selection.

use chrono::{DateTime, Utc};

use super::rows::{ClaimArg, RowSelector, TaskRule};

pub const OPERATION: &str = "cleanup_expired_images";

/// Keyset page over the partial index `(id, expires_at)`: no sort, and each
/// scan starts past the rows earlier batches deleted.
const PAGE: &str = "SELECT id, storage_path FROM images
    WHERE storage_type = 'temporary' AND expires_at < $3 AND id > $1
    ORDER BY id LIMIT $2";

/// Re-checks the condition on the locked row versions.
const CLAIM: &str = "SELECT id, storage_path, file_size FROM images
    WHERE id = ANY($1) AND storage_type = 'temporary' AND expires_at < $2";

pub(crate) fn selector(as_of: DateTime<Utc>) -> RowSelector {
    RowSelector {
        operation: OPERATION,
        page: PAGE,
        short_page_is_last: true,
        claim: CLAIM,
        arg: ClaimArg::Time(as_of),
        rule: TaskRule::NotInUse,
    }
}
