//! What the simulated application knows about its own committed actions.
//! The oracle judges janitor against this, never against janitor's reports.
//!
//! Every entry is written only after the statement it describes has
//! committed, and each task has one writer (the flipper), so the order of a
//! task's entries is its commit order.

use chrono::{DateTime, Utc};
use std::collections::{BTreeMap, BTreeSet};
use uuid::Uuid;

/// One image row the simulator inserted.
#[derive(Debug, Clone)]
pub struct ImageRec {
    /// `storage_path` exactly as stored (maybe `/photos/…`).
    pub stored: String,
    /// The file it names inside the store, relative to the root; `None` for
    /// a path that points outside the root.
    pub place: Option<String>,
    pub kind: &'static str,
    pub session: Option<String>,
    /// `expires_at` of a temporary image, as committed.
    pub expires_at: Option<DateTime<Utc>>,
    /// The file was in the store right after the row committed.
    pub file_at_insert: bool,
    /// The simulator wrote the file itself and committed the row less than
    /// the orphan grace period later (by the wall clock), so no orphan sweep
    /// may ever take the file.
    pub row_within_grace: bool,
    /// The file was written with an old modification time (`cp -p`).
    pub old_mtime: bool,
    /// When the insert ran (database clock), just before it committed.
    pub inserted_at: DateTime<Utc>,
}

/// A reference from a task to an image, as the task's last committed
/// activation returned it.
#[derive(Debug, Clone)]
pub struct Ref {
    pub column: &'static str,
    pub image: i64,
    /// The image's file was in the store right after that commit; from then
    /// on, while the task stays active, it must stay.
    pub file_checked: bool,
}

#[derive(Debug, Clone)]
pub struct TaskRec {
    pub status: &'static str,
    /// Tracked only while the task is pending or processing.
    pub refs: Vec<Ref>,
    /// The simulator commit (in [`Model::commits`] order) that activated it.
    pub since: u64,
    /// When that commit was done (wall clock, the database's machine).
    pub since_at: DateTime<Utc>,
    /// When the simulator's last change to it had committed (wall clock).
    pub changed_at: DateTime<Utc>,
}

impl ImageRec {
    /// Whether the upload wrote its own file (not an alias, a path through
    /// a symlinked folder or a path outside the root).
    pub fn writes_own_file(&self) -> bool {
        !matches!(self.kind, "alias" | "linked" | "outside")
    }
}

pub fn active(status: &str) -> bool {
    matches!(status, "pending" | "processing")
}

/// A violation seen while running, with the image and the active spell of
/// the task concerned, if any.
#[derive(Debug, Clone)]
pub struct Seen {
    pub text: String,
    pub image: Option<i64>,
    pub active_since: Option<DateTime<Utc>>,
}

/// A file or symlink the simulator put into a category folder.
#[derive(Debug, Clone)]
pub struct FileRec {
    pub kind: &'static str,
}

/// A finished job's quarantine folder, as it was when the job finished.
#[derive(Debug, Clone)]
pub struct TrashSnapshot {
    pub files: BTreeSet<String>,
    pub at: DateTime<Utc>,
}

/// One `janitor restore` the operator ran.
#[derive(Debug, Clone)]
pub struct Restore {
    pub job: Uuid,
    /// Files that left the job's trash folder during the restore.
    pub moved: BTreeSet<String>,
    pub output: String,
}

#[derive(Debug, Default)]
pub struct Stats {
    pub uploads: u64,
    pub upload_refused: u64,
    pub orphans: u64,
    pub tasks: u64,
    pub tasks_refused: u64,
    pub flips: u64,
    pub flips_refused: u64,
    pub logouts: u64,
    pub enqueued: u64,
    pub enqueue_failed: u64,
    pub restores: u64,
    pub faults: BTreeMap<&'static str, u64>,
}

#[derive(Debug, Default)]
pub struct Model {
    pub images: BTreeMap<i64, ImageRec>,
    pub tasks: BTreeMap<i64, TaskRec>,
    pub files: BTreeMap<String, FileRec>,
    /// Litter folders the simulator will write nothing more into.
    pub closed_folders: BTreeSet<String>,
    /// Sessions still logged in (uploads may go to them).
    pub sessions: Vec<String>,
    pub snapshots: BTreeMap<Uuid, TrashSnapshot>,
    pub restores: Vec<Restore>,
    /// Violations seen while running (a task losing an image while active,
    /// a worker exiting on its own).
    pub seen: Vec<Seen>,
    pub stats: Stats,
    /// Simulator commits so far (task activations are numbered by it).
    pub commits: u64,
    names: u64,
}

impl Model {
    /// A number never handed out before, for unique file and session names.
    pub fn next_name(&mut self) -> u64 {
        self.names += 1;
        self.names
    }

    pub fn commit(&mut self) -> u64 {
        self.commits += 1;
        self.commits
    }

    pub fn saw(&mut self, seen: Seen) {
        self.seen.push(seen);
    }

    pub fn fault(&mut self, name: &'static str) {
        *self.stats.faults.entry(name).or_default() += 1;
    }

    /// Image ids whose kind is one of `kinds`, newest first.
    pub fn images_of(&self, kinds: &[&str]) -> Vec<i64> {
        self.images.iter().rev().filter(|(_, image)| kinds.contains(&image.kind)).map(|(id, _)| *id).collect()
    }

    /// Every store path the operator's restores put back (or tried to).
    pub fn restored_paths(&self) -> BTreeSet<String> {
        self.restores.iter().flat_map(|r| r.moved.iter().cloned()).collect()
    }
}
