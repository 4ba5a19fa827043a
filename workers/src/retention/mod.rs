//! Retention: janitor's own records, pruned by age, so that nothing it keeps
//! grows without bound. A job runs on every logout, millions a month, for
//! years; every row and Redis entry that outlives its job is dropped once it
//! is old enough. The job that does it is `jobs::prune`; this module holds
//! what is pruned and the statements that do it.
//!
//! | kind | what goes | kept for (default) |
//! |---|---|---|
//! | `unlink_intents` | intents of finished (or forgotten) jobs, after their files are unlinked | — |
//! | `orphan_candidates` | the sweep's spill of finished (or forgotten) jobs | — |
//! | `job_results_session` | completed session jobs, by `finished_at` | 7 days |
//! | `job_results_completed` | other completed jobs, and skipped ones | 90 days |
//! | `job_results_failed` | failed (dead-lettered ones too), cancelled, any other end | 180 days |
//! | `audit_log` | admin API requests, by `at` | 180 days |
//! | `schedule_ticks` | ticks, by `scheduled_at`, but each schedule's newest and newest run | 30 days |
//! | `dead_letters_session`, `dead_letters_bulk` | dead-letter entries, by entry id (ms) | 180 days |
//! | `console_sessions` | console logins past their own expiry (`expires_at`) | — |
//! | `queue_ids` | `{prefix}:ids` entries of finished or forgotten jobs | — |
//!
//! ## What is never touched
//! - **A job that has not finished**, nor anything of it: a row is finished
//!   when its status is neither `queued` nor `running` *and* it has a
//!   `finished_at`. A status janitor does not know yet counts as an end only
//!   with a `finished_at`.
//! - **A file a row refers to.** An unlink intent lists files whose rows are
//!   already deleted; it is never just dropped: its files are unlinked first,
//!   through the storage wall, except those a row refers to again (the same
//!   check the job's own rerun makes, `jobs::rows::unreferenced`).
//! - **Each schedule's newest tick, and its newest tick that ran.** The
//!   scheduler resumes every schedule from its newest recorded tick, so
//!   dropping that one would fire old ticks again; `janitor schedules` shows
//!   the newest run.
//!
//! ## How
//! Postgres rows go in batches of the job's batch size, each one short
//! transaction that also commits the job's counters (fenced by its lease),
//! never holding a lock between batches. Each batch starts where the last
//! one ended (a keyset on the age column), on an index that serves it, so
//! the last batch costs what the first does. Redis entries go in pages of
//! the same size.

/// A `job_results` row that has not finished, as SQL on its columns: queued,
/// running, or without an end time (a status janitor does not know yet
/// counts as an end only with a `finished_at`). The one definition every
/// kind uses; a macro so that `concat!` can build the retention class (and
/// its index's expression) from it.
macro_rules! unfinished {
    () => {
        "(status IN ('queued', 'running') OR finished_at IS NULL)"
    };
}

pub(crate) mod queue;
pub(crate) mod spills;
pub(crate) mod tables;

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::input::{check_retention, InputError};
use crate::layout::Lane;

const DAY: u64 = 86_400;

/// How long each kind of record is kept, in seconds; each from 1 hour to
/// 3650 days. Part of a prune job's parameters (and so of its wire format):
/// the process that makes the job (`janitor prune`, the scheduler) decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Retention {
    /// Completed session jobs (one per logout).
    #[serde(deserialize_with = "keep_secs")]
    pub keep_session_jobs_secs: u64,
    /// Other completed jobs, and skipped ones.
    #[serde(deserialize_with = "keep_secs")]
    pub keep_jobs_secs: u64,
    /// Failed (dead-lettered ones included) and cancelled jobs.
    #[serde(deserialize_with = "keep_secs")]
    pub keep_failed_jobs_secs: u64,
    /// Rows of `audit_log`.
    #[serde(deserialize_with = "keep_secs")]
    pub keep_audit_log_secs: u64,
    /// Rows of `schedule_ticks`.
    #[serde(deserialize_with = "keep_secs")]
    pub keep_schedule_ticks_secs: u64,
    /// Entries of the dead-letter streams.
    #[serde(deserialize_with = "keep_secs")]
    pub keep_dead_letters_secs: u64,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_session_jobs_secs: 7 * DAY,
            keep_jobs_secs: 90 * DAY,
            keep_failed_jobs_secs: 180 * DAY,
            keep_audit_log_secs: 180 * DAY,
            keep_schedule_ticks_secs: 30 * DAY,
            keep_dead_letters_secs: 180 * DAY,
        }
    }
}

impl Retention {
    /// The parameters' names, as the wire format spells them.
    pub const KEYS: [&'static str; 6] = [
        "keep_session_jobs_secs",
        "keep_jobs_secs",
        "keep_failed_jobs_secs",
        "keep_audit_log_secs",
        "keep_schedule_ticks_secs",
        "keep_dead_letters_secs",
    ];

    /// Checks every retention (a job built in code; decoding checks them too).
    pub fn validate(&self) -> Result<(), InputError> {
        for secs in [
            self.keep_session_jobs_secs,
            self.keep_jobs_secs,
            self.keep_failed_jobs_secs,
            self.keep_audit_log_secs,
            self.keep_schedule_ticks_secs,
            self.keep_dead_letters_secs,
        ] {
            check_retention(secs)?;
        }
        Ok(())
    }
}

fn keep_secs<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    check_retention(u64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// One kind of record, in the order a prune job takes them: the spills of
/// finished jobs before their rows, and `{prefix}:ids` last, so that it also
/// loses the jobs whose rows this run removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    UnlinkIntents,
    OrphanCandidates,
    SessionJobs,
    CompletedJobs,
    FailedJobs,
    AuditLog,
    ScheduleTicks,
    DeadLetters(Lane),
    ConsoleSessions,
    QueueIds,
}

impl Kind {
    // A kind is added just before `QueueIds`: a prune job checkpointed by an
    // earlier version resumes at its phase index, so an inserted kind must
    // not come before a phase it may already have passed.
    pub const ALL: [Kind; 11] = [
        Kind::UnlinkIntents,
        Kind::OrphanCandidates,
        Kind::SessionJobs,
        Kind::CompletedJobs,
        Kind::FailedJobs,
        Kind::AuditLog,
        Kind::ScheduleTicks,
        Kind::DeadLetters(Lane::Session),
        Kind::DeadLetters(Lane::Bulk),
        Kind::ConsoleSessions,
        Kind::QueueIds,
    ];

    /// The kind's name in results (`pruned`) and logs.
    pub fn name(self) -> &'static str {
        match self {
            Kind::UnlinkIntents => "unlink_intents",
            Kind::OrphanCandidates => "orphan_candidates",
            Kind::SessionJobs => "job_results_session",
            Kind::CompletedJobs => "job_results_completed",
            Kind::FailedJobs => "job_results_failed",
            Kind::AuditLog => "audit_log",
            Kind::ScheduleTicks => "schedule_ticks",
            Kind::DeadLetters(Lane::Session) => "dead_letters_session",
            Kind::DeadLetters(Lane::Bulk) => "dead_letters_bulk",
            Kind::ConsoleSessions => "console_sessions",
            Kind::QueueIds => "queue_ids",
        }
    }

    /// How long records of this kind are kept; `None` for the kinds that go
    /// with their job, whatever their age. A console session carries its
    /// own expiry, and nothing is kept past it: its row can no longer log
    /// anyone in.
    pub fn keep(self, retention: &Retention) -> Option<Duration> {
        let secs = match self {
            Kind::SessionJobs => retention.keep_session_jobs_secs,
            Kind::CompletedJobs => retention.keep_jobs_secs,
            Kind::FailedJobs => retention.keep_failed_jobs_secs,
            Kind::AuditLog => retention.keep_audit_log_secs,
            Kind::ScheduleTicks => retention.keep_schedule_ticks_secs,
            Kind::DeadLetters(_) => retention.keep_dead_letters_secs,
            Kind::ConsoleSessions => 0,
            Kind::UnlinkIntents | Kind::OrphanCandidates | Kind::QueueIds => return None,
        };
        Some(Duration::from_secs(secs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retentions_default_and_are_bounded_on_the_wire() {
        let defaults: Retention = serde_json::from_str("{}").unwrap();
        assert_eq!(defaults, Retention::default());
        assert_eq!(defaults.keep_session_jobs_secs, 7 * DAY);
        let one: Retention = serde_json::from_str(r#"{"keep_audit_log_secs": 3600}"#).unwrap();
        assert_eq!(one, Retention { keep_audit_log_secs: 3600, ..Retention::default() });
        for bad in [r#"{"keep_jobs_secs": 59}"#, r#"{"keep_dead_letters_secs": 99999999999}"#] {
            assert!(serde_json::from_str::<Retention>(bad).is_err(), "{bad}");
        }
        let mut keys: Vec<String> = match serde_json::to_value(defaults).unwrap() {
            serde_json::Value::Object(map) => map.keys().cloned().collect(),
            _ => unreachable!(),
        };
        keys.sort();
        let mut expected = Retention::KEYS.map(str::to_owned).to_vec();
        expected.sort();
        assert_eq!(keys, expected);
    }

    #[test]
    fn every_kind_has_its_own_name() {
        let mut names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Kind::ALL.len());
    }
}
