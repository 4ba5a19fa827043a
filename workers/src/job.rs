//! What a cleanup job is: its payload, as carried on the queue and recorded in
//! `job_results`, and the validated input it is made of.
//!
//! Validation lives in the types (`SessionId::parse`, `DaysOld::new`), and
//! deserialization goes through them, so a job that exists is a valid job,
//! however it arrived.

use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::input::{
    check_min_age, check_retention, DaysOld, InputError, SessionId, MAX_DURATION_SECS, MIN_RETENTION_SECS,
};
use uuid::Uuid;

use crate::layout::{Lane, Layout};
use crate::retention::Retention;

/// The operations of `cleanup_all`'s phases, in order.
pub const ALL_PHASES: [&str; 3] = ["cleanup_expired_images", "cleanup_old_results", "cleanup_orphaned_files"];

pub use crate::input::DEFAULT_DAYS_OLD;
/// Default grace period for the orphan sweep: the app writes a file before
/// it commits the row that references it.
pub const DEFAULT_MIN_AGE: Duration = Duration::from_secs(3600);

/// One cleanup operation with its parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "kebab-case")]
pub enum CleanupJob {
    /// Temporary images whose `expires_at` has passed.
    Expired,
    /// Every image of one session, whatever its type or expiry.
    Session { session_id: SessionId },
    /// Result images of tasks finished more than `days_old` days ago.
    OldResults {
        #[serde(default)]
        days_old: DaysOld,
    },
    /// Files under the category folders that no row references.
    Orphaned {
        #[serde(default = "default_min_age_secs", deserialize_with = "min_age_secs")]
        min_age_secs: u64,
    },
    /// Empties quarantine folders of jobs that ended more than
    /// `retention_secs` ago.
    PurgeTrash {
        #[serde(default = "default_retention_secs", deserialize_with = "retention_secs")]
        retention_secs: u64,
    },
    /// Expired, then old results, then orphaned, as one job.
    All {
        #[serde(default)]
        days_old: DaysOld,
        #[serde(default = "default_min_age_secs", deserialize_with = "min_age_secs")]
        min_age_secs: u64,
    },
    /// janitor's own records older than their retention (see
    /// [`crate::retention`]): finished jobs' rows, the audit log, schedule
    /// ticks, dead letters, and what finished jobs left behind.
    Prune {
        #[serde(flatten)]
        retention: Retention,
    },
}

fn default_min_age_secs() -> u64 {
    DEFAULT_MIN_AGE.as_secs()
}

/// How long quarantined orphans are kept before `purge-trash` removes them.
pub const DEFAULT_TRASH_RETENTION: Duration = Duration::from_secs(7 * 86_400);

fn default_retention_secs() -> u64 {
    DEFAULT_TRASH_RETENTION.as_secs()
}

fn min_age_secs<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    check_min_age(u64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

fn retention_secs<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
    check_retention(u64::deserialize(deserializer)?).map_err(serde::de::Error::custom)
}

/// A job and whether it only reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobSpec {
    #[serde(flatten)]
    pub job: CleanupJob,
    #[serde(default)]
    pub dry_run: bool,
    /// At most this many deletions in this run (for cautious first runs);
    /// the rest is left for a later run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
}

/// A job as it travels on the queue: the wire format (docs/OPERATIONS.md).
///
/// Decoding is strict: a key the operation does not take (a typo such as
/// `days-old`) refuses the message instead of running with a default.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, serde_json::Value>")]
pub struct QueuedJob {
    /// Set by producers that record the job in Postgres first. A raw enqueue
    /// may leave it out; the worker then derives one from the stream entry
    /// id, so that redeliveries of the entry are the same job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Uuid>,
    #[serde(flatten)]
    pub spec: JobSpec,
    /// Who asked for it (a token name, `cli`, `scheduler`); recorded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub requested_by: Option<String>,
}

/// The same fields, decoded without the key check.
#[derive(Deserialize)]
struct QueuedJobFields {
    #[serde(default)]
    job_id: Option<Uuid>,
    #[serde(flatten)]
    spec: JobSpec,
    #[serde(default)]
    requested_by: Option<String>,
}

impl TryFrom<serde_json::Map<String, serde_json::Value>> for QueuedJob {
    type Error = String;

    fn try_from(map: serde_json::Map<String, serde_json::Value>) -> Result<Self, Self::Error> {
        const COMMON: [&str; 5] = ["job_id", "op", "dry_run", "limit", "requested_by"];
        let op = map.get("op").and_then(serde_json::Value::as_str).unwrap_or_default();
        let own: &[&str] = match op {
            "session" => &["session_id"],
            "old-results" => &["days_old"],
            "orphaned" => &["min_age_secs"],
            "all" => &["days_old", "min_age_secs"],
            "purge-trash" => &["retention_secs"],
            "prune" => &Retention::KEYS,
            _ => &[],
        };
        if let Some(key) = map.keys().find(|k| !COMMON.contains(&k.as_str()) && !own.contains(&k.as_str())) {
            return Err(format!("unknown field `{key}` for operation `{op}`"));
        }
        let fields: QueuedJobFields =
            serde_json::from_value(serde_json::Value::Object(map)).map_err(|e| e.to_string())?;
        Ok(Self { job_id: fields.job_id, spec: fields.spec, requested_by: fields.requested_by })
    }
}

impl JobSpec {
    pub fn new(job: CleanupJob, dry_run: bool) -> Self {
        Self { job, dry_run, limit: None }
    }

    /// The stream the job travels on.
    pub fn lane(&self) -> Lane {
        match self.job {
            CleanupJob::Session { .. } => Lane::Session,
            _ => Lane::Bulk,
        }
    }

    /// The dedup key of a session job; other jobs are not deduplicated.
    pub fn dedup_key(&self, layout: &Layout) -> Option<String> {
        let CleanupJob::Session { session_id } = &self.job else {
            return None;
        };
        Some(layout.session_dedup(session_id.as_str(), self.dry_run))
    }

    /// The parameters as recorded in `job_results.params`: the operation's,
    /// plus `limit` when set.
    pub fn params(&self) -> serde_json::Value {
        let mut params = self.job.params();
        if let Some(limit) = self.limit {
            params["limit"] = limit.into();
        }
        params
    }

    /// Rebuilds a job from its `job_results` row (operation, params, dry run).
    pub fn from_record(operation: &str, params: &serde_json::Value, dry_run: bool) -> Result<Self, serde_json::Error> {
        let op = match operation {
            "cleanup_expired_images" => "expired",
            "cleanup_session" => "session",
            "cleanup_old_results" => "old-results",
            "cleanup_orphaned_files" => "orphaned",
            "cleanup_all" => "all",
            "cleanup_trash" => "purge-trash",
            "prune_records" => "prune",
            other => other,
        };
        let mut value = match params {
            serde_json::Value::Object(map) => serde_json::Value::Object(map.clone()),
            _ => serde_json::json!({}),
        };
        value["op"] = op.into();
        value["dry_run"] = dry_run.into();
        serde_json::from_value(value)
    }
}

impl CleanupJob {
    /// The stable operation name used in results, logs and metrics.
    pub fn operation(&self) -> &'static str {
        match self {
            CleanupJob::Expired => "cleanup_expired_images",
            CleanupJob::Session { .. } => "cleanup_session",
            CleanupJob::OldResults { .. } => "cleanup_old_results",
            CleanupJob::Orphaned { .. } => "cleanup_orphaned_files",
            CleanupJob::All { .. } => "cleanup_all",
            CleanupJob::PurgeTrash { .. } => "cleanup_trash",
            CleanupJob::Prune { .. } => "prune_records",
        }
    }

    /// Checks the parameters that the types do not: the durations. A job
    /// built in code is checked here; one decoded from the queue or a record
    /// was checked by its decoding.
    pub fn validate(&self) -> Result<(), InputError> {
        match self {
            CleanupJob::Orphaned { min_age_secs } | CleanupJob::All { min_age_secs, .. } => {
                check_min_age(*min_age_secs).map(drop)
            }
            CleanupJob::PurgeTrash { retention_secs } => check_retention(*retention_secs).map(drop),
            CleanupJob::Prune { retention } => retention.validate(),
            CleanupJob::Expired | CleanupJob::Session { .. } | CleanupJob::OldResults { .. } => Ok(()),
        }
    }

    /// The parameters as recorded in `job_results.params`.
    pub fn params(&self) -> serde_json::Value {
        match self {
            CleanupJob::Expired => serde_json::json!({}),
            CleanupJob::Session { session_id } => serde_json::json!({ "session_id": session_id }),
            CleanupJob::OldResults { days_old } => serde_json::json!({ "days_old": days_old }),
            CleanupJob::Orphaned { min_age_secs } => {
                serde_json::json!({ "min_age_secs": min_age_secs })
            }
            CleanupJob::PurgeTrash { retention_secs } => serde_json::json!({ "retention_secs": retention_secs }),
            CleanupJob::All { days_old, min_age_secs } => {
                serde_json::json!({ "days_old": days_old, "min_age_secs": min_age_secs })
            }
            CleanupJob::Prune { retention } => serde_json::to_value(retention).expect("a retention serializes"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_validated() {
        assert!(SessionId::parse("abc-123").is_ok());
        assert_eq!(SessionId::parse(""), Err(InputError::EmptySessionId));
        assert_eq!(SessionId::parse("a\u{7}b"), Err(InputError::SessionIdControl));
        assert_eq!(SessionId::parse(&"x".repeat(256)), Err(InputError::SessionIdTooLong));
        assert!(SessionId::parse(&"x".repeat(255)).is_ok());
    }

    #[test]
    fn jobs_rebuild_from_their_records() {
        let jobs = [
            CleanupJob::Expired,
            CleanupJob::Session { session_id: SessionId::parse("s").unwrap() },
            CleanupJob::OldResults { days_old: DaysOld::new(7).unwrap() },
            CleanupJob::Orphaned { min_age_secs: 5 },
            CleanupJob::All { days_old: DaysOld::new(9).unwrap(), min_age_secs: 60 },
            CleanupJob::Prune { retention: Retention { keep_audit_log_secs: 7200, ..Retention::default() } },
        ];
        for job in jobs {
            let rebuilt = JobSpec::from_record(job.operation(), &job.params(), true).unwrap();
            assert_eq!(rebuilt, JobSpec { job, dry_run: true, limit: None });
        }
    }

    #[test]
    fn durations_are_bounded_on_the_wire() {
        for bad in [
            r#"{"op":"orphaned","min_age_secs":315360001}"#,
            r#"{"op":"orphaned","min_age_secs":-1}"#,
            r#"{"op":"all","min_age_secs":18446744073709551615}"#,
            r#"{"op":"purge-trash","retention_secs":0}"#,
            r#"{"op":"purge-trash","retention_secs":99999999999}"#,
        ] {
            assert!(serde_json::from_str::<QueuedJob>(bad).is_err(), "{bad}");
        }
        let ok: QueuedJob = serde_json::from_str(r#"{"op":"orphaned","min_age_secs":315360000}"#).unwrap();
        assert_eq!(ok.spec.job.validate(), Ok(()));
        assert_eq!(CleanupJob::PurgeTrash { retention_secs: 60 }.validate(), Err(InputError::RetentionOutOfRange(60)));
    }

    #[test]
    fn prune_travels_with_its_retentions() {
        let queued: QueuedJob = serde_json::from_str(r#"{"op":"prune","keep_session_jobs_secs":86400}"#).unwrap();
        let retention = Retention { keep_session_jobs_secs: 86_400, ..Retention::default() };
        assert_eq!(queued.spec.job, CleanupJob::Prune { retention });
        let payload = serde_json::to_value(&queued.spec).unwrap();
        assert_eq!(payload["op"], "prune");
        assert_eq!(payload["keep_dead_letters_secs"], 180 * 86_400);
        for bad in [
            r#"{"op":"prune","keep_jobs_secs":60}"#,
            r#"{"op":"prune","keep-jobs-secs":86400}"#,
            r#"{"op":"prune","days_old":30}"#,
        ] {
            assert!(serde_json::from_str::<QueuedJob>(bad).is_err(), "{bad}");
        }
        let short = Retention { keep_schedule_ticks_secs: 60, ..Retention::default() };
        assert_eq!(CleanupJob::Prune { retention: short }.validate(), Err(InputError::RetentionOutOfRange(60)));
    }

    #[test]
    fn days_old_is_bounded() {
        for bad in [-1, 0, 36_501, i64::MAX] {
            assert_eq!(DaysOld::new(bad), Err(InputError::DaysOldOutOfRange(bad)));
        }
        assert_eq!(DaysOld::new(36_500).unwrap().get(), 36_500);
    }

    #[test]
    fn wire_format_round_trips_and_validates() {
        let spec: JobSpec = serde_json::from_str(r#"{"op":"session","session_id":"s1","dry_run":true}"#).unwrap();
        assert_eq!(spec.job, CleanupJob::Session { session_id: SessionId::parse("s1").unwrap() });
        assert!(spec.dry_run);
        let back: JobSpec = serde_json::from_value(serde_json::to_value(&spec).unwrap()).unwrap();
        assert_eq!(back, spec);

        let defaults: JobSpec = serde_json::from_str(r#"{"op":"all"}"#).unwrap();
        assert_eq!(defaults.job, CleanupJob::All { days_old: DaysOld::default(), min_age_secs: 3600 });
        for typo in [r#"{"op":"old-results","days-old":90}"#, r#"{"op":"expired","session_id":"s"}"#] {
            let err = serde_json::from_str::<QueuedJob>(typo).unwrap_err().to_string();
            assert!(err.contains("unknown field"), "{typo}: {err}");
        }
        let queued: QueuedJob = serde_json::from_str(
            r#"{"job_id":"6f1c3a8e-0000-4000-8000-000000000001","op":"expired","requested_by":"app"}"#,
        )
        .unwrap();
        assert_eq!(queued.spec.job, CleanupJob::Expired);
        assert_eq!(queued.requested_by.as_deref(), Some("app"));
        for bad in [
            r#"{"op":"session","session_id":""}"#,
            r#"{"op":"old-results","days_old":0}"#,
            r#"{"op":"explode"}"#,
            r#"{"op":"session"}"#,
        ] {
            assert!(serde_json::from_str::<JobSpec>(bad).is_err(), "{bad}");
        }
    }
}
