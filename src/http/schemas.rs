//! The response bodies as the OpenAPI document describes them. The handlers
//! build these bodies as JSON; these types only give them a schema.

#![allow(dead_code)] // Read by the OpenAPI derive, never constructed.

use std::collections::BTreeMap;

use utoipa::ToSchema;
use uuid::Uuid;

/// What went wrong. For bad input, `field` names the parameter.
#[derive(ToSchema)]
pub struct ErrorBody {
    pub error: String,
    pub field: Option<String>,
}

/// A job put on the queue, or an equal one already queued or running
/// (`deduplicated`).
#[derive(ToSchema)]
pub struct Accepted {
    pub job_id: Uuid,
    /// `queued`, or the job's status when `wait` timed out.
    pub status: String,
    /// Where to follow it.
    pub status_url: String,
    pub deduplicated: bool,
}

/// A job's outcome, as the application's cleanup endpoints report it: the
/// counts (`deleted_count`, `deleted_size_bytes`, `skipped_count`,
/// `error_count`, `errors`), the operation's own keys (see
/// docs/OPERATIONS.md) and, for a dry run, `sample`: the first paths it
/// would delete and the first items it skipped, with why.
#[derive(ToSchema)]
pub struct JobResult(pub BTreeMap<String, serde_json::Value>);

/// What could be cleaned, per operation.
#[derive(ToSchema)]
pub struct Stats(pub BTreeMap<String, serde_json::Value>);

/// A page of recent jobs, newest first.
#[derive(ToSchema)]
pub struct JobList {
    pub jobs: Vec<JobResult>,
    /// The cursor of the next page (`before=`), absent on the last page.
    pub next_before: Option<String>,
}

/// A job's status after a cancel or retry.
#[derive(ToSchema)]
pub struct JobStatus {
    pub job_id: Uuid,
    pub status: String,
}

/// One dead letter: its entry, lane, job and why it died.
#[derive(ToSchema)]
pub struct DeadLetter(pub BTreeMap<String, serde_json::Value>);

/// The dead letters of both lanes.
#[derive(ToSchema)]
pub struct DeadLetters {
    pub dead_letters: Vec<DeadLetter>,
}

/// How many dead letters were removed.
#[derive(ToSchema)]
pub struct Discarded {
    pub discarded: u64,
}

/// What a restore put back, and what it left in the trash with why (the
/// original path is taken again, or goes through a symlink).
#[derive(ToSchema)]
pub struct RestoreReport {
    pub job_id: Uuid,
    pub restored: u64,
    /// `[path, reason]` pairs.
    pub conflicts: Vec<Vec<String>>,
}
