//! Schedules: what runs when. Pure logic (parsing, tick arithmetic, the
//! catch-up plan); the loop that records and enqueues ticks is
//! [`crate::scheduler`].
//!
//! The cron format is the one apalis-cron uses (the `cron` crate: a seconds
//! field first, `"0 0 2 * * *"`). apalis-cron's own stream is not used: it
//! fires every tick once per running instance and never catches up, while
//! here every tick is recorded in Postgres and runs exactly once.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;
use uuid::Uuid;

use crate::job::{CleanupJob, DaysOld, JobSpec, DEFAULT_MIN_AGE};
use crate::retention::Retention;

/// Ticks enumerated at most per catch-up; older ones are summarised.
pub const MAX_TICKS: usize = 1000;

/// One `[[schedule]]` table, as written in the config file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleConfig {
    pub name: String,
    pub cron: String,
    pub timezone: Option<String>,
    pub operation: String,
    pub days_old: Option<i64>,
    pub dry_run: Option<bool>,
}

/// A parsed, valid schedule.
#[derive(Debug, Clone)]
pub struct Schedule {
    pub name: String,
    pub cron_text: String,
    cron: cron::Schedule,
    pub timezone: chrono_tz::Tz,
    pub spec: JobSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule {0:?}: name must be 1 to 100 letters, digits, '-' or '_'")]
    BadName(String),
    #[error("schedule {name:?}: invalid cron expression {cron:?} ({reason}); it has six fields, seconds first, e.g. \"0 0 2 * * *\"")]
    BadCron { name: String, cron: String, reason: String },
    #[error("schedule {name:?}: unknown timezone {timezone:?} (use an IANA name such as \"Europe/Berlin\")")]
    BadTimezone { name: String, timezone: String },
    #[error("schedule {name:?}: unknown operation {operation:?} (expected expired, old-results, orphaned, all, purge-trash or prune)")]
    BadOperation { name: String, operation: String },
    #[error("schedule {name:?}: {reason}")]
    BadDaysOld { name: String, reason: String },
    #[error("schedule {0:?} is defined twice")]
    Duplicate(String),
}

impl Schedule {
    pub fn parse(config: ScheduleConfig) -> Result<Self, ScheduleError> {
        let name = config.name;
        let name_ok = !name.is_empty()
            && name.len() <= 100
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            return Err(ScheduleError::BadName(name));
        }
        let cron = cron::Schedule::from_str(&config.cron).map_err(|e| ScheduleError::BadCron {
            name: name.clone(),
            cron: config.cron.clone(),
            // The parser's message draws a caret under the input; keep its last line.
            reason: e.to_string().lines().last().unwrap_or_default().trim().to_owned(),
        })?;
        let zone = config.timezone.unwrap_or_else(|| "UTC".to_owned());
        let timezone = chrono_tz::Tz::from_str(&zone)
            .map_err(|_| ScheduleError::BadTimezone { name: name.clone(), timezone: zone.clone() })?;
        let job = job(&name, &config.operation, config.days_old)?;
        Ok(Self {
            name,
            cron_text: config.cron,
            cron,
            timezone,
            spec: JobSpec { job, dry_run: config.dry_run.unwrap_or(false), limit: None },
        })
    }

    /// Parses a list, refusing duplicate names.
    pub fn parse_all(configs: Vec<ScheduleConfig>) -> Result<Vec<Self>, ScheduleError> {
        let mut schedules: Vec<Self> = Vec::with_capacity(configs.len());
        for config in configs {
            let schedule = Self::parse(config)?;
            if schedules.iter().any(|s| s.name == schedule.name) {
                return Err(ScheduleError::Duplicate(schedule.name));
            }
            schedules.push(schedule);
        }
        Ok(schedules)
    }

    /// Without a config file: everything nightly at 02:00 (30-day retention),
    /// an orphan sweep every Sunday at 03:00, a purge of quarantined orphans
    /// older than 7 days every day at 04:30, and a prune of janitor's own
    /// old records every day at 05:30, UTC.
    pub fn defaults() -> Vec<Self> {
        let entry = |name: &str, cron: &str, operation: &str| ScheduleConfig {
            name: name.into(),
            cron: cron.into(),
            timezone: None,
            operation: operation.into(),
            days_old: None,
            dry_run: None,
        };
        Self::parse_all(vec![
            entry("nightly-all", "0 0 2 * * *", "all"),
            entry("weekly-orphans", "0 0 3 * * Sun", "orphaned"),
            entry("daily-trash-purge", "0 30 4 * * *", "purge-trash"),
            entry("daily-prune", "0 30 5 * * *", "prune"),
        ])
        .expect("the default schedules are valid")
    }

    /// Gives a prune schedule these retentions (the settings of the
    /// process that enqueues it); any other schedule is left as it is.
    pub fn with_retention(mut self, retention: Retention) -> Self {
        if let CleanupJob::Prune { retention: own } = &mut self.spec.job {
            *own = retention;
        }
        self
    }

    /// The first tick strictly after `at`.
    pub fn next_after(&self, at: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.ticks_after(at).next()
    }

    /// Ticks strictly after `after`, in order.
    pub fn ticks_after(&self, after: DateTime<Utc>) -> impl Iterator<Item = DateTime<Utc>> + '_ {
        self.cron.after(&after.with_timezone(&self.timezone)).map(|t| t.with_timezone(&Utc))
    }

    /// The job id of a tick on a queue: the same for every scheduler of
    /// that queue, and different for another queue (another deployment)
    /// that shares the database.
    pub fn job_id(&self, queue: &str, tick: DateTime<Utc>) -> Uuid {
        let key = format!("schedule/{queue}/{}/{}", self.name, tick.timestamp_millis());
        Uuid::new_v5(&Uuid::NAMESPACE_OID, key.as_bytes())
    }
}

fn job(name: &str, operation: &str, days_old: Option<i64>) -> Result<CleanupJob, ScheduleError> {
    let days = |days: Option<i64>| match days {
        None => Ok(DaysOld::default()),
        Some(d) => {
            DaysOld::new(d).map_err(|e| ScheduleError::BadDaysOld { name: name.to_owned(), reason: e.to_string() })
        }
    };
    let min_age_secs = DEFAULT_MIN_AGE.as_secs();
    let job = match operation {
        "expired" => CleanupJob::Expired,
        "old-results" => CleanupJob::OldResults { days_old: days(days_old)? },
        "orphaned" => CleanupJob::Orphaned { min_age_secs },
        "purge-trash" => CleanupJob::PurgeTrash { retention_secs: crate::job::DEFAULT_TRASH_RETENTION.as_secs() },
        "all" => CleanupJob::All { days_old: days(days_old)?, min_age_secs },
        "prune" => CleanupJob::Prune { retention: Retention::default() },
        other => return Err(ScheduleError::BadOperation { name: name.to_owned(), operation: other.to_owned() }),
    };
    if days_old.is_some()
        && matches!(
            job,
            CleanupJob::Expired
                | CleanupJob::Orphaned { .. }
                | CleanupJob::PurgeTrash { .. }
                | CleanupJob::Prune { .. }
        )
    {
        return Err(ScheduleError::BadDaysOld {
            name: name.to_owned(),
            reason: format!("days_old does not apply to {operation}"),
        });
    }
    Ok(job)
}

/// What to do with one due tick.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    Run,
    Skip(String),
}

/// Decides the due ticks (oldest first, all at or before `now`): the newest
/// one inside the catch-up window runs; the others inside it are coalesced
/// into that run; older ones are recorded as missed. So a scheduler that
/// comes back after every replica was down runs a missed tick once, and no
/// missed tick is dropped without a trace.
pub fn plan(due: &[DateTime<Utc>], now: DateTime<Utc>, catch_up: Duration) -> Vec<(DateTime<Utc>, Decision)> {
    let window = chrono::Duration::from_std(catch_up).unwrap_or(chrono::Duration::MAX);
    let run = due.iter().rev().find(|t| now - **t <= window).copied();
    due.iter()
        .map(|&tick| {
            let decision = match run {
                Some(r) if r == tick => Decision::Run,
                Some(r) if now - tick <= window => {
                    Decision::Skip(format!("coalesced: a later missed tick ({}) ran instead", r.to_rfc3339()))
                }
                _ => Decision::Skip(format!(
                    "missed: all schedulers were down, and it is older than the catch-up window ({})",
                    humanize(catch_up)
                )),
            };
            (tick, decision)
        })
        .collect()
}

fn humanize(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_millis() != 0 || secs == 0 {
        format!("{}ms", duration.as_millis())
    } else if secs % 3600 == 0 {
        format!("{}h", secs / 3600)
    } else if secs % 60 == 0 {
        format!("{}m", secs / 60)
    } else {
        format!("{secs}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone as _;

    fn config(cron: &str, operation: &str) -> ScheduleConfig {
        ScheduleConfig {
            name: "s".into(),
            cron: cron.into(),
            timezone: None,
            operation: operation.into(),
            days_old: None,
            dry_run: None,
        }
    }

    #[test]
    fn defaults_parse_and_fire_at_two_and_on_sundays() {
        let defaults = Schedule::defaults();
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap(); // a Thursday
        assert_eq!(defaults[0].next_after(at), Some(Utc.with_ymd_and_hms(2026, 11, 27, 2, 0, 0).unwrap()));
        assert_eq!(defaults[1].next_after(at), Some(Utc.with_ymd_and_hms(2026, 11, 29, 3, 0, 0).unwrap()));
    }

    #[test]
    fn the_defaults_prune_daily_with_the_given_retentions() {
        let prune = Schedule::defaults().into_iter().find(|s| s.name == "daily-prune").unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        let ticks: Vec<_> = prune.ticks_after(at).take(2).collect();
        assert_eq!(
            ticks,
            [
                Utc.with_ymd_and_hms(2026, 11, 27, 5, 30, 0).unwrap(),
                Utc.with_ymd_and_hms(2026, 11, 28, 5, 30, 0).unwrap()
            ]
        );
        assert_eq!(prune.spec.job, CleanupJob::Prune { retention: Retention::default() });
        let short = Retention { keep_session_jobs_secs: 86_400, ..Retention::default() };
        assert_eq!(prune.with_retention(short).spec.job, CleanupJob::Prune { retention: short });
        let all = Schedule::defaults().remove(0).with_retention(short);
        assert!(matches!(all.spec.job, CleanupJob::All { .. }));
        let mut days = config("0 0 5 * * *", "prune");
        days.days_old = Some(3);
        assert!(matches!(Schedule::parse(days), Err(ScheduleError::BadDaysOld { .. })));
    }

    #[test]
    fn timezones_shift_the_ticks() {
        let mut berlin = config("0 0 2 * * *", "expired");
        berlin.timezone = Some("Europe/Berlin".into());
        let schedule = Schedule::parse(berlin).unwrap();
        let at = Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap();
        assert_eq!(schedule.next_after(at), Some(Utc.with_ymd_and_hms(2026, 11, 27, 1, 0, 0).unwrap()));
    }

    #[test]
    fn bad_configuration_is_refused_with_the_reason() {
        assert!(matches!(Schedule::parse(config("every day", "all")), Err(ScheduleError::BadCron { .. })));
        assert!(matches!(Schedule::parse(config("0 0 2 * * *", "session")), Err(ScheduleError::BadOperation { .. })));
        let mut zone = config("0 0 2 * * *", "all");
        zone.timezone = Some("Mars/Olympus".into());
        assert!(matches!(Schedule::parse(zone), Err(ScheduleError::BadTimezone { .. })));
        let mut days = config("0 0 2 * * *", "old-results");
        days.days_old = Some(0);
        assert!(matches!(Schedule::parse(days), Err(ScheduleError::BadDaysOld { .. })));
        let twice = vec![config("0 0 2 * * *", "all"), config("0 0 3 * * *", "all")];
        assert_eq!(Schedule::parse_all(twice).unwrap_err(), ScheduleError::Duplicate("s".into()));
    }

    #[test]
    fn job_ids_are_per_schedule_and_tick() {
        let a = Schedule::parse(config("* * * * * *", "expired")).unwrap();
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
        assert_eq!(a.job_id("q", t), a.job_id("q", t));
        assert_ne!(a.job_id("q", t), a.job_id("q", t + chrono::Duration::seconds(1)));
        assert_ne!(a.job_id("q", t), a.job_id("other", t), "each queue has its own ticks");
    }

    #[test]
    fn the_plan_runs_the_newest_tick_in_the_window_once() {
        let now = Utc.with_ymd_and_hms(2026, 1, 2, 3, 0, 0).unwrap();
        let hours = |h: i64| now - chrono::Duration::hours(h);
        let due = [hours(30), hours(8), hours(5), hours(1)];
        let plan = plan(&due, now, Duration::from_secs(6 * 3600));
        assert!(matches!(&plan[0].1, Decision::Skip(r) if r.starts_with("missed")));
        assert!(matches!(&plan[1].1, Decision::Skip(r) if r.starts_with("missed")));
        assert!(matches!(&plan[2].1, Decision::Skip(r) if r.starts_with("coalesced")));
        assert_eq!(plan[3], (hours(1), Decision::Run));
        let stale = super::plan(&[hours(7)], now, Duration::from_secs(6 * 3600));
        assert!(matches!(&stale[0].1, Decision::Skip(_)), "nothing in the window runs");
    }
}
