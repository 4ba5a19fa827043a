//! A running job's state: counters, error items and the checkpoint. It is
//! held in memory by the one worker that holds the job's lease, and written
//! whole to `job_results` with every batch, in the batch's transaction.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::sample::Sample;
use crate::storage::FileIdentity;

/// What one phase (or the whole job) did so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Rows (or orphan files) deleted, including files that were already gone.
    pub deleted: i64,
    /// Bytes freed: the rows' `file_size`, or the orphan files' sizes.
    pub bytes: i64,
    /// Images left alone because a pending or processing task uses them.
    pub skipped: i64,
    /// Items that failed; each one's row (or file) stays.
    pub errors: i64,
}

impl Counters {
    pub fn add(&mut self, other: Counters) {
        self.deleted += other.deleted;
        self.bytes += other.bytes;
        self.skipped += other.skipped;
        self.errors += other.errors;
    }
}

/// One item that could not be cleaned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub image_id: Option<i64>,
    pub path: String,
    pub error: String,
    /// The phase it happened in, so `cleanup_all` can nest errors by phase.
    pub operation: String,
}

/// Where a phase stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum Cursor {
    Start,
    /// Row phases claim rows in id order; everything up to this id is done.
    AfterId(i64),
    /// The orphan sweep walks in path order; everything up to this path is done.
    AfterPath(String),
}

/// Everything needed to resume a job where its last committed batch ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The job's reference time, fixed at its first start, so that a resumed
    /// run selects the same candidates (expiry and retention cutoffs, the
    /// orphan grace period).
    pub as_of: DateTime<Utc>,
    /// Index of the phase under way; only `cleanup_all` has more than one.
    pub phase: usize,
    pub cursor: Cursor,
    /// Counters per phase, in phase order.
    pub phases: Vec<Counters>,
    /// Files the orphan sweep has looked at.
    #[serde(default)]
    pub files_scanned: u64,
    /// Orphans the sweep is about to delete, saved before it deletes them:
    /// after a crash the rerun finishes this batch first, so files deleted
    /// just before the crash are still counted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending: Option<PendingOrphans>,
    /// Candidate rows the phase passed over because another transaction held
    /// them (another run, a paused worker, the app). Tried again at the end
    /// of the phase. Capped at [`RECHECK_CAP`]; rows beyond it are left to a
    /// later run.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub recheck: Vec<i64>,
    /// Batch durations: counts per [`BATCH_BUCKETS`] bucket (the last one is
    /// `+Inf`), and their sum in seconds. `/metrics` adds them up over jobs.
    #[serde(default)]
    pub batch_seconds: Vec<u64>,
    #[serde(default)]
    pub batch_seconds_sum: f64,
    /// The orphan sweep's walk while it is under way. Only the candidates it
    /// spilled are kept in the database; everything else is here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub walk: Option<WalkState>,
    /// What the orphan sweep's walk found, set only once the walk has
    /// covered the whole store: the ratio guard decides on nothing less.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub census: Option<Census>,
    /// Unlink intents this job has recorded (`janitor_unlink_intents`), which
    /// numbers the next one.
    #[serde(default)]
    pub intents: i64,
    /// A dry run's bounded sample of what it would delete and what it
    /// skipped (see [`crate::sample`]); empty, and not written, otherwise.
    #[serde(default, skip_serializing_if = "Sample::is_empty")]
    pub sample: Sample,
    /// The items the job was estimated to have when it first started (see
    /// `jobs::estimate`): for the console's progress bar and ETA only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub estimated_total: Option<i64>,
}

/// Upper bounds (seconds) of the batch-duration histogram's buckets.
pub const BATCH_BUCKETS: [f64; 9] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// The most candidate rows a phase keeps for its end-of-phase recheck.
pub const RECHECK_CAP: usize = 10_000;

/// One orphan batch between "decided" and "counted".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PendingOrphans {
    /// `(path, size)` of each orphan to delete.
    pub files: Vec<(String, u64)>,
    /// The cursor once the batch is counted.
    pub cursor: String,
    /// Files the batch scanned.
    pub scanned: u64,
    /// Which file each of `files` was when it was judged (same order): the
    /// move takes only that file. Empty in a checkpoint written before they
    /// were kept; such a batch moves what is at each path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub identities: Vec<FileIdentity>,
}

/// An orphan walk under way: how far it got and what it counted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkState {
    /// The last path walked.
    pub cursor: String,
    pub files: u64,
    /// Files no row refers to, past the grace period (spilled).
    pub candidates: u64,
    pub bytes: u64,
    /// Entries the walk could not read or could not safely name; counted
    /// into the job when the walk completes, so a walk done again does not
    /// count them twice.
    pub errors: i64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub error_items: Vec<ErrorItem>,
}

/// What a complete orphan walk found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Census {
    pub files: u64,
    pub candidates: u64,
    pub bytes: u64,
}

/// The job's state as the engine carries it from batch to batch.
#[derive(Debug, Clone)]
pub struct Progress {
    pub checkpoint: Checkpoint,
    /// The first `cap` error items; `totals().errors` keeps counting.
    pub errors: Vec<ErrorItem>,
    pub error_cap: usize,
    /// Batches committed by this run (not persisted; for progress reports).
    pub batches: u64,
    /// Unlink intents (`janitor_unlink_intents.batch`) whose files have been
    /// unlinked and whose failures are already counted here: the next save
    /// of this progress drops them in the same statement that writes the
    /// counts (`results::save_progress`), so the two stand or fall together.
    pub settled: Vec<i64>,
}

impl Progress {
    pub fn new(as_of: DateTime<Utc>, phases: usize, error_cap: usize) -> Self {
        Self {
            checkpoint: Checkpoint {
                as_of,
                phase: 0,
                cursor: Cursor::Start,
                phases: vec![Counters::default(); phases],
                files_scanned: 0,
                pending: None,
                recheck: Vec::new(),
                batch_seconds: Vec::new(),
                batch_seconds_sum: 0.0,
                walk: None,
                census: None,
                intents: 0,
                sample: Sample::default(),
                estimated_total: None,
            },
            errors: Vec::new(),
            error_cap,
            batches: 0,
            settled: Vec::new(),
        }
    }

    pub fn totals(&self) -> Counters {
        let mut totals = Counters::default();
        for phase in &self.checkpoint.phases {
            totals.add(*phase);
        }
        totals
    }

    /// Adds one batch's outcome to the current phase and moves the cursor.
    pub fn record(&mut self, delta: Counters, errors: Vec<ErrorItem>, cursor: Cursor) {
        self.add(delta, errors);
        self.checkpoint.cursor = cursor;
        self.batches += 1;
    }

    /// Adds counts and error items to the current phase.
    pub fn add(&mut self, delta: Counters, errors: Vec<ErrorItem>) {
        let phase = self.checkpoint.phase;
        self.checkpoint.phases[phase].add(delta);
        let room = self.error_cap.saturating_sub(self.errors.len());
        self.errors.extend(errors.into_iter().take(room));
    }

    /// Forgets the settled intents once a save of this progress committed.
    pub fn saved(&mut self) {
        self.settled.clear();
    }

    /// Moves on to the next phase.
    pub fn next_phase(&mut self) {
        self.checkpoint.phase += 1;
        self.checkpoint.cursor = Cursor::Start;
        self.checkpoint.recheck.clear();
    }

    /// Adds one batch's duration to the histogram.
    pub fn observe(&mut self, elapsed: std::time::Duration) {
        let seconds = elapsed.as_secs_f64();
        let histogram = &mut self.checkpoint.batch_seconds;
        histogram.resize(BATCH_BUCKETS.len() + 1, 0);
        let bucket = BATCH_BUCKETS.iter().position(|le| seconds <= *le).unwrap_or(BATCH_BUCKETS.len());
        histogram[bucket] += 1;
        self.checkpoint.batch_seconds_sum += seconds;
    }

    /// Remembers rows to try again at the end of the phase, up to the cap.
    pub fn defer(&mut self, ids: impl IntoIterator<Item = i64>) {
        let room = RECHECK_CAP.saturating_sub(self.checkpoint.recheck.len());
        self.checkpoint.recheck.extend(ids.into_iter().take(room));
    }
}

/// Bytes as the seed's `*_size_mb` fields show them: MiB, two decimals.
pub fn megabytes(bytes: i64) -> f64 {
    (bytes as f64 / (1024.0 * 1024.0) * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_capped_but_counted() {
        let mut progress = Progress::new(Utc::now(), 1, 2);
        let item = |n: i64| ErrorItem {
            image_id: Some(n),
            path: format!("photos/{n}"),
            error: "boom".into(),
            operation: "cleanup_expired_images".into(),
        };
        let delta = Counters { errors: 3, ..Counters::default() };
        progress.record(delta, vec![item(1), item(2), item(3)], Cursor::AfterId(3));
        assert_eq!(progress.errors.len(), 2);
        assert_eq!(progress.totals().errors, 3);
        assert_eq!(progress.checkpoint.cursor, Cursor::AfterId(3));
    }

    #[test]
    fn megabytes_match_the_seed() {
        assert_eq!(megabytes(5_242_880), 5.0);
        assert_eq!(megabytes(1_572_864), 1.5);
    }
}
