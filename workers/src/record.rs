//! A job's row in `job_results`, as read back: what `results` stores and
//! `report` renders.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

/// A job's row, as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct JobRecord {
    pub job_id: Uuid,
    pub operation: String,
    pub params: Value,
    pub dry_run: bool,
    pub status: String,
    pub deleted_count: i64,
    pub deleted_bytes: i64,
    pub skipped_count: i64,
    pub error_count: i64,
    pub errors: Value,
    pub checkpoint: Option<Value>,
    pub attempts: i32,
    pub lease_epoch: i64,
    pub worker: Option<String>,
    pub requested_by: Option<String>,
    pub queue: Option<String>,
    pub entry_id: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub cancel_requested_at: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub result: Option<Value>,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub updated_at: DateTime<Utc>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl JobRecord {
    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "completed" | "failed" | "skipped" | "cancelled")
    }
}
