//! The cleanup operations, one per file. Each file holds its SQL and says
//! whether it is idempotent and how it resumes.
//!
//! Three operations delete image rows with their files and share one batch
//! loop ([`rows`]); they differ only in how they pick candidates. The orphan
//! sweep walks the storage instead. `cleanup_all` runs three of them in turn
//! as phases of one job. `prune_records` tidies janitor's own records.

pub mod all;
pub(crate) mod context;
pub(crate) mod estimate;
pub mod expired;
pub mod old_results;
pub mod orphaned;
pub mod prune;
mod references;
pub(crate) mod rows;
pub mod session;
pub mod stats;
pub mod trash;

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::job::CleanupJob;

/// One step of a job. Every job has one phase but `cleanup_all`.
#[derive(Debug, Clone)]
pub(crate) enum Phase {
    Rows(rows::RowSelector),
    Orphans { min_age: Duration },
    Trash { retention: Duration },
    Prune(prune::Step),
}

/// The phases of a job, given the job's reference time.
pub(crate) fn phases(job: &CleanupJob, as_of: DateTime<Utc>) -> Vec<Phase> {
    match job {
        CleanupJob::Expired => vec![Phase::Rows(expired::selector(as_of))],
        CleanupJob::Session { session_id } => vec![Phase::Rows(session::selector(session_id))],
        CleanupJob::OldResults { days_old } => {
            vec![Phase::Rows(old_results::selector(as_of, *days_old))]
        }
        CleanupJob::Orphaned { min_age_secs } => vec![Phase::Orphans { min_age: Duration::from_secs(*min_age_secs) }],
        CleanupJob::All { days_old, min_age_secs } => all::phases(as_of, *days_old, *min_age_secs),
        CleanupJob::PurgeTrash { retention_secs } => {
            vec![Phase::Trash { retention: Duration::from_secs(*retention_secs) }]
        }
        CleanupJob::Prune { retention } => prune::phases(retention, as_of),
    }
}

/// How a phase ended.
#[derive(Debug)]
pub(crate) enum PhaseEnd {
    Done,
    /// Stopped between batches on request; the checkpoint is committed.
    Interrupted,
    /// The phase refuses to go on; the job ends as failed with this reason.
    Refused(String),
    /// The phase could not run now (another sweep holds the storage root);
    /// a job of this phase alone ends as skipped with this reason.
    Skipped(String),
    /// The phase's last batch ended the job in its own transaction (a job
    /// of one row phase: see `RunContext::ends_in_batch`); this is its row.
    Ended(Box<crate::results::JobRecord>),
}
