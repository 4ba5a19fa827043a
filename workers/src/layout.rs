//! Where janitor keeps things in Redis. Every key lives under one prefix
//! (`JANITOR_QUEUE`, default `janitor`), so several deployments, and tests,
//! can share one Redis without seeing each other's jobs.
//!
//! | key | type | what |
//! |---|---|---|
//! | `{prefix}:session:jobs` | stream | session cleanups (short jobs) |
//! | `{prefix}:bulk:jobs` | stream | every other operation (long jobs) |
//! | `{prefix}:{lane}:dead` | stream | dead letters, with the reason |
//! | `{prefix}:ids` | hash | job id → entry id of every job on a stream |
//! | `{prefix}:dedup:{live,dry}:{session_id}` | string, with TTL | the session job queued or running |
//!
//! Two lanes, each with its own workers, so that a session cleanup never
//! waits behind a long orphan scan.

use uuid::Uuid;

use crate::queue::QueueConfig;

/// The two streams.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// Session cleanups: small, frequent, latency-sensitive.
    Session,
    /// Expired, old results, orphaned, all: large and rare.
    Bulk,
}

impl Lane {
    pub const ALL: [Lane; 2] = [Lane::Session, Lane::Bulk];

    pub fn name(self) -> &'static str {
        match self {
            Lane::Session => "session",
            Lane::Bulk => "bulk",
        }
    }
}

/// The key layout under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The queue settings' prefix for a lane: its keys are
    /// `{prefix}:{lane}:jobs` and `{prefix}:{lane}:dead`.
    pub fn lane_prefix(&self, lane: Lane) -> String {
        format!("{}:{}", self.prefix, lane.name())
    }

    pub fn stream(&self, lane: Lane) -> String {
        QueueConfig::new(self.lane_prefix(lane)).keys().stream
    }

    pub fn dead(&self, lane: Lane) -> String {
        QueueConfig::new(self.lane_prefix(lane)).keys().dead
    }

    pub fn ids(&self) -> String {
        format!("{}:ids", self.prefix)
    }

    /// The hash of postponed jobs: job id → when an outage first postponed
    /// it (milliseconds since the epoch).
    pub fn postponed(&self) -> String {
        format!("{}:postponed", self.prefix)
    }

    /// The dedup key of a session's job (see `JobSpec::dedup_key`).
    pub fn session_dedup(&self, session_id: &str, dry_run: bool) -> String {
        let mode = if dry_run { "dry" } else { "live" };
        format!("{}:dedup:{mode}:{session_id}", self.prefix)
    }

    /// The job id of an entry enqueued without one: stable for the entry, so
    /// every redelivery is the same job.
    pub fn derived_job_id(&self, entry_id: &str) -> Uuid {
        Uuid::new_v5(&Uuid::NAMESPACE_OID, format!("{}/{entry_id}", self.prefix).as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_stay_under_the_prefix() {
        let layout = Layout::new("janitor:t1");
        assert_eq!(layout.stream(Lane::Session), "janitor:t1:session:jobs");
        assert_eq!(layout.dead(Lane::Bulk), "janitor:t1:bulk:dead");
        assert_eq!(layout.session_dedup("abc", false), "janitor:t1:dedup:live:abc");
        assert_eq!(layout.derived_job_id("1-0"), layout.derived_job_id("1-0"));
        assert_ne!(layout.derived_job_id("1-0"), Layout::new("other").derived_job_id("1-0"));
    }
}
