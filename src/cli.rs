//! The command line: what `janitor` accepts. Input is validated here, by the
//! engine's own types, so a bad value exits with code 2 before anything runs.

use std::time::Duration;

use clap::{Parser, Subcommand};
use janitor_workers::{CleanupJob, DaysOld, SessionId};
use uuid::Uuid;

use crate::settings::Settings;

#[derive(Debug, Parser)]
#[command(
    name = "janitor",
    version,
    about = "Keeps the face-swap application's image storage clean"
)]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Create the database if missing and apply the migrations.
    Migrate,
    /// Run a cleanup operation here and now, recording it in job_results.
    Run(RunArgs),
    /// Show what could be cleaned.
    Stats {
        #[arg(long)]
        json: bool,
    },
    /// Show recorded job outcomes, newest first.
    Results(ResultsArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    #[command(subcommand)]
    pub operation: Operation,
    /// Report what would be deleted; change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Print the result as JSON.
    #[arg(long, global = true)]
    pub json: bool,
    /// Resume (or re-read) the job with this id instead of starting a new one.
    #[arg(long, global = true)]
    pub job_id: Option<Uuid>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Operation {
    /// Temporary images whose expires_at has passed.
    Expired,
    /// All images of one session, whatever their type or expiry.
    Session {
        #[arg(value_parser = parse_session_id)]
        session_id: SessionId,
    },
    /// Result images of tasks finished more than N days ago (task rows stay).
    OldResults {
        #[arg(long, default_value = "30", allow_negative_numbers = true, value_parser = parse_days_old)]
        days_old: DaysOld,
    },
    /// Files no image row references, older than a grace period.
    Orphaned {
        #[arg(long, default_value = "1h", value_parser = parse_min_age)]
        min_age: Duration,
    },
    /// Expired, then old results, then orphaned, as one job.
    All {
        #[arg(long, default_value = "30", allow_negative_numbers = true, value_parser = parse_days_old)]
        days_old: DaysOld,
        #[arg(long, default_value = "1h", value_parser = parse_min_age)]
        min_age: Duration,
    },
}

impl Operation {
    pub fn job(&self) -> CleanupJob {
        match self.clone() {
            Operation::Expired => CleanupJob::Expired,
            Operation::Session { session_id } => CleanupJob::Session { session_id },
            Operation::OldResults { days_old } => CleanupJob::OldResults { days_old },
            Operation::Orphaned { min_age } => CleanupJob::Orphaned {
                min_age_secs: min_age.as_secs(),
            },
            Operation::All { days_old, min_age } => CleanupJob::All {
                days_old,
                min_age_secs: min_age.as_secs(),
            },
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ResultsArgs {
    /// One job's outcome (also while it is queued or running).
    pub job_id: Option<Uuid>,
    /// How many recent jobs to list.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(i64).range(1..=10_000))]
    pub limit: i64,
    /// Only jobs of this operation (e.g. cleanup_session).
    #[arg(long)]
    pub operation: Option<String>,
    /// Only jobs with this status.
    #[arg(long, value_parser = ["queued", "running", "completed", "failed"])]
    pub status: Option<String>,
    #[arg(long)]
    pub json: bool,
}

fn parse_session_id(raw: &str) -> Result<SessionId, String> {
    SessionId::parse(raw).map_err(|e| e.to_string())
}

fn parse_days_old(raw: &str) -> Result<DaysOld, String> {
    let days: i64 = raw
        .parse()
        .map_err(|_| format!("days_old must be an integer from 1 to 36500, got {raw:?}"))?;
    DaysOld::new(days).map_err(|e| e.to_string())
}

fn parse_min_age(raw: &str) -> Result<Duration, String> {
    humantime::parse_duration(raw)
        .map_err(|e| format!("invalid duration {raw:?} ({e}); use e.g. 30m, 1h, 2d"))
}
