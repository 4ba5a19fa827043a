//! Seeding and job-row helpers shared by the fault tests. The row helpers
//! (from the queue harness) treat a database error as "not yet": some tests
//! read while Postgres is restarting.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{files_under, JobRow};
use crate::process::Janitor;
use crate::support::Store;

/// Files in the four category folders (not in the quarantine folder).
pub fn stored_files(store: &Store) -> usize {
    janitor_workers::storage::CATEGORIES.iter().map(|category| files_under(&store.path(category))).sum()
}

/// Files moved to the quarantine folder (`.janitor-trash`), if the sweep
/// quarantines instead of unlinking.
pub fn quarantined_files(store: &Store) -> usize {
    files_under(&store.path(".janitor-trash"))
}

pub use crate::support::seed_expired_in as seed_expired;

pub use crate::harness::{read_job as job, wait_for_job};

/// Waits until the job is completed, failed or skipped.
pub async fn finished(pool: &PgPool, job_id: Uuid, timeout: Duration) -> JobRow {
    wait_for_job(pool, job_id, "the job has finished", timeout, |row| {
        matches!(row.0.as_str(), "completed" | "failed" | "skipped")
    })
    .await
}

/// The job's (deleted_bytes, error_count, errors).
pub async fn details(pool: &PgPool, job_id: Uuid) -> (i64, i64, Value) {
    sqlx::query_as("SELECT deleted_bytes, error_count, errors FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(pool)
        .await
        .expect("read the job's details")
}

/// `janitor enqueue <args> --json`; returns the job id.
pub async fn enqueue(janitor: &Janitor, args: &[&str]) -> Uuid {
    let (code, stdout, stderr) =
        janitor.run(&[&["enqueue"], args, &["--json"]].concat(), Duration::from_secs(30)).await;
    assert_eq!(code, 0, "enqueue failed: {stderr}");
    let reply: Value = serde_json::from_str(&stdout).expect("enqueue prints JSON");
    reply["job_id"].as_str().unwrap().parse().unwrap()
}
