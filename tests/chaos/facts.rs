//! What the oracle reads once the queue has drained: the database as it is,
//! the deletion log the triggers kept, every job's row, the store and the
//! quarantine folders.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::files;

#[derive(Debug, Clone)]
pub struct Task {
    pub status: String,
    /// husband, wife, template, result.
    pub columns: [Option<i64>; 4],
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Count {
    pub rows: i64,
    pub bytes: i64,
}

#[derive(Debug, Clone)]
pub struct Job {
    pub id: Uuid,
    pub operation: String,
    pub status: String,
    pub dry_run: bool,
    pub attempts: i32,
    pub params: Value,
    pub last_error: Option<String>,
    pub as_of: Option<DateTime<Utc>>,
    /// Each phase's (deleted, bytes), from the checkpoint.
    pub phases: Vec<Count>,
}

impl Job {
    pub fn phase(&self, index: usize) -> Count {
        self.phases.get(index).copied().unwrap_or_default()
    }

    /// The phases that delete rows, and the one that sweeps orphans.
    pub fn row_phases(&self) -> &'static [usize] {
        match self.operation.as_str() {
            "cleanup_expired_images" | "cleanup_session" | "cleanup_old_results" => &[0],
            "cleanup_all" => &[0, 1],
            _ => &[],
        }
    }

    pub fn orphan_phase(&self) -> Option<usize> {
        match self.operation.as_str() {
            "cleanup_orphaned_files" => Some(0),
            "cleanup_all" => Some(2),
            _ => None,
        }
    }

    pub fn describe(&self) -> String {
        format!(
            "job {} ({}{}, {}, {} attempt(s){})",
            self.id,
            self.operation,
            if self.dry_run { ", dry run" } else { "" },
            self.status,
            self.attempts,
            self.last_error.as_ref().map(|e| format!(", last error {e:?}")).unwrap_or_default()
        )
    }
}

/// One committed image deletion, from the trigger.
#[derive(Debug, Clone)]
pub struct Deletion {
    pub path: String,
    pub size: i64,
    pub txid: i64,
    pub app: String,
    pub at: DateTime<Utc>,
    /// The tasks that referenced the image at that moment.
    pub users: Value,
}

pub struct Facts {
    /// Live image rows: id → storage_path.
    pub images: BTreeMap<i64, String>,
    pub tasks: BTreeMap<i64, Task>,
    pub jobs: BTreeMap<Uuid, Job>,
    pub deletions: BTreeMap<i64, Deletion>,
    /// Transaction → the (job, phase) whose progress it saved.
    pub progress: BTreeMap<i64, BTreeSet<(Uuid, i32)>>,
    pub store: BTreeSet<String>,
    pub trash: BTreeMap<String, BTreeSet<String>>,
}

impl Facts {
    pub async fn read(pool: &PgPool, root: &std::path::Path) -> sqlx::Result<Self> {
        let images = sqlx::query_as("SELECT id, storage_path FROM images").fetch_all(pool).await?.into_iter().collect();
        let tasks = sqlx::query_as::<_, (i64, String, Option<i64>, Option<i64>, Option<i64>, Option<i64>)>(
            "SELECT id, status, husband_photo_id, wife_photo_id, template_id, result_image_id FROM face_swap_tasks",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, status, h, w, t, r)| (id, Task { status, columns: [h, w, t, r] }))
        .collect();
        let deletions = sqlx::query_as::<_, (i64, String, i64, i64, String, DateTime<Utc>, Value)>(
            "SELECT image_id, storage_path, file_size, txid, app, at, users FROM chaos_deletions",
        )
        .fetch_all(pool)
        .await?
        .into_iter()
        .map(|(id, path, size, txid, app, at, users)| (id, Deletion { path, size, txid, app, at, users }))
        .collect();
        let mut progress: BTreeMap<i64, BTreeSet<(Uuid, i32)>> = BTreeMap::new();
        let saved: Vec<(i64, Uuid, Option<i32>)> =
            sqlx::query_as("SELECT txid, job_id, phase FROM chaos_progress").fetch_all(pool).await?;
        for (txid, job, phase) in saved {
            progress.entry(txid).or_default().insert((job, phase.unwrap_or(-1)));
        }
        Ok(Self {
            images,
            tasks,
            jobs: read_jobs(pool).await?,
            deletions,
            progress,
            store: files::store_files(root),
            trash: files::trash_folders(root),
        })
    }

    /// The live rows naming each store path (`/photos/a` names `photos/a`).
    pub fn named_paths(&self) -> BTreeMap<String, Vec<i64>> {
        let mut named: BTreeMap<String, Vec<i64>> = BTreeMap::new();
        for (id, stored) in &self.images {
            named.entry(stored.trim_start_matches('/').to_owned()).or_default().push(*id);
        }
        named
    }

    /// The job (and phase) whose progress the deleting transaction saved,
    /// if exactly one.
    pub fn deleted_by(&self, image: i64) -> Option<(Uuid, i32)> {
        let deletion = self.deletions.get(&image)?;
        let saved = self.progress.get(&deletion.txid)?;
        (saved.len() == 1).then(|| *saved.iter().next().unwrap())
    }

    /// How an image left, for messages.
    pub fn how_deleted(&self, image: i64) -> String {
        let Some(deletion) = self.deletions.get(&image) else { return "no deletion recorded".into() };
        let by = match self.deleted_by(image) {
            Some((job, phase)) => match self.jobs.get(&job) {
                Some(job) => format!("{} phase {phase}", job.describe()),
                None => format!("job {job} phase {phase}"),
            },
            None => format!("transaction {} (no single job's progress saved in it)", deletion.txid),
        };
        format!("deleted at {} by {by}; tasks referencing it then: {}", deletion.at, deletion.users)
    }
}

async fn read_jobs(pool: &PgPool) -> sqlx::Result<BTreeMap<Uuid, Job>> {
    type Row = (Uuid, String, String, bool, i32, Value, Option<String>, Option<Value>);
    let rows: Vec<Row> = sqlx::query_as(
        "SELECT job_id, operation, status, dry_run, attempts, params, last_error, checkpoint FROM job_results",
    )
    .fetch_all(pool)
    .await?;
    let mut jobs = BTreeMap::new();
    for (id, operation, status, dry_run, attempts, params, last_error, checkpoint) in rows {
        let checkpoint = checkpoint.unwrap_or(Value::Null);
        let as_of = checkpoint["as_of"].as_str().and_then(|t| t.parse().ok());
        let phases = checkpoint["phases"]
            .as_array()
            .map(|phases| {
                phases
                    .iter()
                    .map(|p| Count {
                        rows: p["deleted"].as_i64().unwrap_or(0),
                        bytes: p["bytes"].as_i64().unwrap_or(0),
                    })
                    .collect()
            })
            .unwrap_or_default();
        jobs.insert(id, Job { id, operation, status, dry_run, attempts, params, last_error, as_of, phases });
    }
    Ok(jobs)
}
