//! How the engine's jobs are tuned: batch sizes, concurrency, pacing, the
//! orphan sweep's guards. One value per engine, set by the CLI from its
//! settings; jobs read it through their run context.

use std::time::Duration;

/// The default floor of the orphan sweep's grace period.
pub const DEFAULT_MIN_GRACE: Duration = Duration::from_secs(600);

/// Tuning knobs. The defaults come from the benchmark (docs/PERFORMANCE.md).
#[derive(Debug, Clone)]
pub struct EngineSettings {
    /// Rows (or scanned files) per batch; one transaction each.
    pub batch_size: usize,
    /// Threads unlinking files at once within a batch.
    pub unlink_concurrency: usize,
    /// Error items kept in a job's row (the count goes on past it).
    pub error_cap: usize,
    /// Optional cap on deletions per second, per job.
    pub max_deletes_per_sec: Option<u32>,
    /// The orphan sweep deletes nothing if more than this share of the files
    /// it scans look orphaned.
    pub max_orphan_ratio: f64,
    /// Orphans are moved to `.janitor-trash/<job id>/` instead of unlinked.
    pub quarantine: bool,
    /// The shortest grace period the orphan sweep accepts: a file younger
    /// than this may be one the application is still writing, before it
    /// commits the row that refers to it.
    pub min_grace: Duration,
}

impl Default for EngineSettings {
    fn default() -> Self {
        Self {
            batch_size: 1000,
            unlink_concurrency: 8,
            error_cap: 100,
            max_deletes_per_sec: None,
            max_orphan_ratio: 0.2,
            quarantine: true,
            min_grace: DEFAULT_MIN_GRACE,
        }
    }
}
