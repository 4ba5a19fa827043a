//! Where janitor keeps things in Redis. Every key lives under one prefix
//! (`JANITOR_QUEUE`, default `janitor`), so several deployments, and tests,
//! can share one Redis without seeing each other's jobs.
//!
//! The prefix is the keys' Redis Cluster hash tag: `janitor` gives
//! `{janitor}:session:jobs`, so all of a deployment's keys hash to one slot
//! and every script and `MULTI` (which touch the stream, the ids hash and a
//! dedup key together) is legal on a cluster, as BullMQ does. A prefix that
//! already holds a tag (`{janitor}:eu`) is used as it is. One slot means one
//! master holds a deployment's queue; a deployment's queue traffic is a few
//! commands per job, far below what one Redis serves.
//!
//! | key (prefix `janitor`) | type | what |
//! |---|---|---|
//! | `{janitor}:session:jobs` | stream | session cleanups (short jobs) |
//! | `{janitor}:bulk:jobs` | stream | every other operation (long jobs) |
//! | `{janitor}:{lane}:dead` | stream | dead letters, with the reason |
//! | `{janitor}:ids` | hash | job id → entry id of every job on a stream |
//! | `{janitor}:postponed` | hash | jobs an outage postponed |
//! | `{janitor}:dedup:{live,dry}:{session_id}` | string, with TTL | the session job queued or running |
//!
//! Two lanes, each with its own workers, so that a session cleanup never
//! waits behind a long orphan scan.

use uuid::Uuid;

#[cfg(test)]
use crate::queue::has_hash_tag;
use crate::queue::{hash_tagged, QueueConfig};

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
    /// The name of the queue (`JANITOR_QUEUE`), as `job_results.queue` holds it.
    prefix: String,
    /// What every key starts with: the prefix as a hash tag.
    base: String,
}

impl Layout {
    pub fn new(prefix: impl Into<String>) -> Self {
        let prefix = prefix.into();
        let base = hash_tagged(&prefix);
        Self { prefix, base }
    }

    /// The queue's name, as given (without the hash tag's braces).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The queue settings' prefix for a lane: its keys are
    /// `{prefix}:{lane}:jobs` and `{prefix}:{lane}:dead`.
    pub fn lane_prefix(&self, lane: Lane) -> String {
        format!("{}:{}", self.base, lane.name())
    }

    pub fn stream(&self, lane: Lane) -> String {
        QueueConfig::new(self.lane_prefix(lane)).keys().stream
    }

    pub fn dead(&self, lane: Lane) -> String {
        QueueConfig::new(self.lane_prefix(lane)).keys().dead
    }

    /// The stream a lane had before keys carried the hash tag
    /// (`janitor:session:jobs`), if that differs from today's. Workers move
    /// what an application still adds there onto today's stream.
    pub fn untagged_stream(&self, lane: Lane) -> Option<String> {
        let old = format!("{}:{}:jobs", self.prefix, lane.name());
        (old != self.stream(lane)).then_some(old)
    }

    pub fn ids(&self) -> String {
        format!("{}:ids", self.base)
    }

    /// The hash of postponed jobs: job id → when an outage first postponed
    /// it (milliseconds since the epoch).
    pub fn postponed(&self) -> String {
        format!("{}:postponed", self.base)
    }

    /// The dedup key of a session's job (see `JobSpec::dedup_key`).
    pub fn session_dedup(&self, session_id: &str, dry_run: bool) -> String {
        let mode = if dry_run { "dry" } else { "live" };
        format!("{}:dedup:{mode}:{session_id}", self.base)
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
        assert_eq!(layout.prefix(), "janitor:t1");
        assert_eq!(layout.stream(Lane::Session), "{janitor:t1}:session:jobs");
        assert_eq!(layout.dead(Lane::Bulk), "{janitor:t1}:bulk:dead");
        assert_eq!(layout.ids(), "{janitor:t1}:ids");
        assert_eq!(layout.postponed(), "{janitor:t1}:postponed");
        assert_eq!(layout.session_dedup("abc", false), "{janitor:t1}:dedup:live:abc");
        assert_eq!(layout.untagged_stream(Lane::Session).as_deref(), Some("janitor:t1:session:jobs"));
        assert_eq!(Layout::new("{janitor}").untagged_stream(Lane::Bulk), None);
        assert_eq!(layout.derived_job_id("1-0"), layout.derived_job_id("1-0"));
        assert_ne!(layout.derived_job_id("1-0"), Layout::new("other").derived_job_id("1-0"));
    }

    #[test]
    fn every_key_hashes_to_the_prefix_tag() {
        // The slot is decided by the tag alone, so comparing tags is enough.
        fn tag(key: &str) -> &str {
            let open = key.find('{').unwrap();
            let length = key[open + 1..].find('}').unwrap();
            &key[open + 1..open + 1 + length]
        }
        for prefix in ["janitor", "janitor:eu", "{janitor}:eu", "app{shard1}", "x{}y", "a}b"] {
            let layout = Layout::new(prefix);
            let keys = [
                layout.stream(Lane::Session),
                layout.stream(Lane::Bulk),
                layout.dead(Lane::Session),
                layout.dead(Lane::Bulk),
                layout.ids(),
                layout.postponed(),
                layout.session_dedup("s{1}", true),
            ];
            let expected = tag(&keys[0]).to_owned();
            assert!(!expected.is_empty(), "{prefix}");
            for key in &keys {
                assert!(has_hash_tag(key), "{key}");
                assert_eq!(tag(key), expected, "{prefix}: {key}");
            }
        }
        assert_eq!(Layout::new("{janitor}:eu").stream(Lane::Bulk), "{janitor}:eu:bulk:jobs");
        assert!(!has_hash_tag("x{}y") && !has_hash_tag("plain") && has_hash_tag("a{b}"));
    }
}
