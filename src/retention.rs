//! The retention settings: how long janitor keeps each kind of its own
//! records before `janitor prune` (or the scheduler's daily prune) removes
//! them. They travel with the prune job as its parameters, so they are read
//! by the process that makes the job: `janitor prune`, `janitor scheduler`
//! (and `janitor schedules`, which shows them), not by the workers.

use std::time::Duration;

use janitor_workers::retention::Retention;

#[derive(Debug, Clone, clap::Args)]
pub struct RetentionSettings {
    /// Completed session jobs (one per logout) are kept this long (1h to 3650d).
    #[arg(long, env = "JANITOR_KEEP_SESSION_JOBS", default_value = "7d", global = true, value_parser = parse_keep)]
    pub keep_session_jobs: Duration,

    /// Other completed jobs, and skipped ones, are kept this long.
    #[arg(long, env = "JANITOR_KEEP_JOBS", default_value = "90d", global = true, value_parser = parse_keep)]
    pub keep_jobs: Duration,

    /// Failed (dead-lettered included) and cancelled jobs are kept this long.
    #[arg(long, env = "JANITOR_KEEP_FAILED_JOBS", default_value = "180d", global = true, value_parser = parse_keep)]
    pub keep_failed_jobs: Duration,

    /// Rows of the admin API's audit log are kept this long.
    #[arg(long, env = "JANITOR_KEEP_AUDIT_LOG", default_value = "180d", global = true, value_parser = parse_keep)]
    pub keep_audit_log: Duration,

    /// Scheduled ticks are kept this long (each schedule's newest, and newest
    /// run, always stay).
    #[arg(long, env = "JANITOR_KEEP_SCHEDULE_TICKS", default_value = "30d", global = true, value_parser = parse_keep)]
    pub keep_schedule_ticks: Duration,

    /// Dead letters are kept this long.
    #[arg(long, env = "JANITOR_KEEP_DEAD_LETTERS", default_value = "180d", global = true, value_parser = parse_keep)]
    pub keep_dead_letters: Duration,
}

impl RetentionSettings {
    /// The retentions as a prune job carries them.
    pub fn get(&self) -> Retention {
        Retention {
            keep_session_jobs_secs: self.keep_session_jobs.as_secs(),
            keep_jobs_secs: self.keep_jobs.as_secs(),
            keep_failed_jobs_secs: self.keep_failed_jobs.as_secs(),
            keep_audit_log_secs: self.keep_audit_log.as_secs(),
            keep_schedule_ticks_secs: self.keep_schedule_ticks.as_secs(),
            keep_dead_letters_secs: self.keep_dead_letters.as_secs(),
        }
    }
}

/// A retention: a duration from 1 hour to 3650 days.
fn parse_keep(raw: &str) -> Result<Duration, String> {
    let duration = crate::input::parse_duration(raw)?;
    janitor_workers::job::check_retention(duration.as_secs()).map_err(|e| e.to_string())?;
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;

    #[test]
    fn the_defaults_are_the_engines() {
        let cli = crate::cli::Cli::try_parse_from(["janitor", "prune"]).unwrap();
        assert_eq!(cli.settings.retention.get(), janitor_workers::retention::Retention::default());
        let cli = crate::cli::Cli::try_parse_from(["janitor", "prune", "--keep-audit-log", "2d"]).unwrap();
        assert_eq!(cli.settings.retention.get().keep_audit_log_secs, 2 * 86_400);
        assert!(crate::cli::Cli::try_parse_from(["janitor", "prune", "--keep-jobs", "10m"]).is_err());
    }
}
