//! `cleanup_session`: every image of one session, whatever its type or
//! expiry (the user logged out).
//!
//! Idempotent: a rerun finds only what is left, so duplicate deliveries are
//! harmless. Resumes from the last committed image id.

use super::rows::{ClaimArg, RowSelector, TaskRule};
use crate::job::SessionId;

pub const OPERATION: &str = "cleanup_session";

const PAGE: &str = "SELECT id, storage_path FROM images
    WHERE session_id = $3 AND id > $1
    ORDER BY id LIMIT $2";

const CLAIM: &str = "SELECT id, storage_path, file_size FROM images
    WHERE id = ANY($1) AND session_id = $2";

pub(crate) fn selector(session_id: &SessionId) -> RowSelector {
    RowSelector {
        operation: OPERATION,
        page: PAGE,
        short_page_is_last: true,
        claim: CLAIM,
        arg: ClaimArg::Text(session_id.as_str().to_owned()),
        rule: TaskRule::NotInUse,
    }
}
