//! The command line: what `janitor` accepts. Input is validated here, by the
//! engine's own types, so a bad value exits with code 2 before anything runs.

use std::time::Duration;

use clap::{Parser, Subcommand};
use janitor_workers::{CleanupJob, DaysOld, SessionId};
use uuid::Uuid;

use crate::input::{
    parse_days_old, parse_duration, parse_grace, parse_lease, parse_positive, parse_retention, parse_session_id,
};
use crate::settings::Settings;

#[derive(Debug, Parser)]
#[command(name = "janitor", version, about = "Keeps the face-swap application's image storage clean")]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Seed a small sample store in its own database and folder, then show
    /// stats, a dry run, the real run and stats again.
    #[command(after_help = "Example:\n  janitor demo\n  janitor demo --dir /tmp/demo --images 2000")]
    Demo(crate::commands::demo::DemoArgs),
    /// Create the database if missing and apply the migrations.
    Migrate,
    /// Run a cleanup operation here and now, recording it in job_results.
    #[command(
        after_help = "Examples:\n  janitor run expired --dry-run\n  janitor run orphaned --min-age 2h --limit 100\n  janitor run old-results --days-old 30 --json"
    )]
    Run(RunArgs),
    /// Show what could be cleaned.
    #[command(after_help = "Examples:\n  janitor stats\n  janitor stats --json")]
    Stats {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show recorded job outcomes, newest first.
    Results(ResultsArgs),
    /// Put a cleanup job on the queue (a worker runs it).
    #[command(
        after_help = "Examples:\n  janitor enqueue session 8f14e45f\n  janitor enqueue all --wait --timeout 600"
    )]
    Enqueue(EnqueueArgs),
    /// Run queued jobs until SIGINT or SIGTERM.
    #[command(after_help = "Examples:\n  janitor worker\n  janitor worker --concurrency 16 --max-deletes-per-sec 500")]
    Worker(WorkerArgs),
    /// Enqueue scheduled runs, exactly once per tick, until SIGINT/SIGTERM.
    Scheduler {
        /// Missed ticks younger than this run once when a scheduler comes back.
        #[arg(long, env = "JANITOR_CATCH_UP", default_value = "6h", value_parser = parse_duration)]
        catch_up: Duration,
        /// A file the scheduler writes the time to after each pass over the
        /// schedules (at least every 30 s), for a healthcheck.
        #[arg(long, env = "JANITOR_HEALTH_FILE")]
        health_file: Option<std::path::PathBuf>,
    },
    /// Serve the admin HTTP API and the operations console (at /).
    #[command(
        after_help = "Examples:\n  JANITOR_ADMIN_TOKENS=ops=$(openssl rand -hex 24) janitor serve --listen 0.0.0.0:8000\n  janitor serve --allow-unauthenticated   # loopback only"
    )]
    Serve(ServeArgs),
    /// Put a job's quarantined orphans back where they were.
    #[command(after_help = "Example:\n  janitor restore 0192f3c4-5d6e-7f80-9a1b-2c3d4e5f6a7b")]
    Restore {
        /// The orphan sweep (or `all`) whose quarantine to restore.
        job_id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Show the admin API's audit log, newest first.
    Audit {
        /// How far back, e.g. 1d, 2h.
        #[arg(long, default_value = "1d", value_parser = parse_duration)]
        since: Duration,
        /// Show at most this many rows.
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(i64).range(1..=100_000))]
        limit: i64,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Cancel a job: a queued one never starts; a running one stops at its
    /// next batch boundary as `cancelled`, keeping its counts and checkpoint.
    Cancel {
        /// The job to cancel.
        job_id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run a failed, cancelled or dead-lettered job again under the same id,
    /// from its checkpoint (its totals stay exact across the runs).
    Retry {
        /// The job to run again.
        job_id: Uuid,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// List the dead letters of both lanes, with their reasons.
    Dead {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove dead letters: one by its entry id, or every one of a job id.
    Discard {
        /// A dead letter's entry id (see `janitor dead`), or a job id.
        target: String,
    },
    /// List the schedules with their next fire time and last run.
    Schedules {
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove janitor's own records older than their retention (finished
    /// jobs, audit log, schedule ticks, dead letters, left-overs of finished
    /// jobs); the scheduler runs this daily.
    Prune(PruneArgs),
}

#[derive(Debug, clap::Args)]
pub struct PruneArgs {
    /// Count what would be removed; change nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Print the result (with counts per kind) as JSON.
    #[arg(long)]
    pub json: bool,
    /// Resume (or re-read) the prune job with this id.
    #[arg(long)]
    pub job_id: Option<Uuid>,
}

#[derive(Debug, clap::Args)]
pub struct EnqueueArgs {
    #[command(subcommand)]
    pub operation: Operation,
    /// Report what would be deleted; change nothing.
    #[arg(long, global = true)]
    pub dry_run: bool,
    /// Print JSON (`{"job_id": ...}`, or the result with --wait).
    #[arg(long, global = true)]
    pub json: bool,
    /// Wait for the job to finish and print its result as `janitor run` would.
    #[arg(long, global = true)]
    pub wait: bool,
    /// Delete at most this many items in this run (for cautious first runs).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
    /// With --wait: give up after this long (the job goes on).
    #[arg(long, global = true, default_value = "1h", value_parser = parse_duration)]
    pub timeout: Duration,
}

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "JANITOR_LISTEN", default_value = "127.0.0.1:8000")]
    pub listen: std::net::SocketAddr,
    /// Tokens as name=token pairs, comma-separated; `name:ro=token` is
    /// read-only (also `[[admin_token]]` tables in the config file, with
    /// `read_only = true`).
    #[arg(long, env = "JANITOR_ADMIN_TOKENS", hide_env_values = true)]
    pub admin_tokens: Option<String>,
    /// Serve without authentication. Refused unless listening on loopback.
    #[arg(long)]
    pub allow_unauthenticated: bool,
    /// Per-token limits by endpoint class, e.g. all=5/h,orphaned=5/h,session=6000/m.
    #[arg(long, env = "JANITOR_RATE_LIMITS", default_value = crate::http::limits::DEFAULT_LIMITS)]
    pub rate_limits: String,
    /// Reverse proxies (IPs and CIDR blocks, comma-separated) whose
    /// X-Forwarded-For names the client that the limit on failed logins and
    /// tokens charges; from any other peer the header is ignored. Empty: none.
    #[arg(long, env = "JANITOR_TRUSTED_PROXIES", default_value = "",
          value_parser = crate::http::proxies::TrustedProxies::parse)]
    pub trusted_proxies: crate::http::proxies::TrustedProxies,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// Session cleanups run at once.
    #[arg(long, env = "JANITOR_CONCURRENCY", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    pub concurrency: u32,
    /// Long jobs (expired, old results, orphaned, all) run at once.
    #[arg(long, env = "JANITOR_BULK_CONCURRENCY", default_value_t = 2, value_parser = clap::value_parser!(u32).range(1..=64))]
    pub bulk_concurrency: u32,
    /// A job whose worker stopped renewing its claim this long ago is
    /// rescued by another worker (at most 60s is sensible).
    #[arg(long, env = "JANITOR_LEASE", default_value = "30s", value_parser = parse_lease)]
    pub lease: Duration,
    /// Deliveries of a job before it is failed and dead-lettered.
    #[arg(long, env = "JANITOR_MAX_ATTEMPTS", default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100))]
    pub max_attempts: u32,
    /// First retry delay; it doubles with each attempt, up to the lease.
    #[arg(long, env = "JANITOR_RETRY_BASE", default_value = "1s", value_parser = parse_duration)]
    pub retry_base: Duration,
    /// How often to look for jobs Redis lost and for dead letters.
    #[arg(long, env = "JANITOR_RECONCILE_INTERVAL", default_value = "10s", value_parser = parse_positive)]
    pub reconcile_interval: Duration,
    /// How long a queued job may go unseen before it is re-enqueued.
    #[arg(long, env = "JANITOR_RECONCILE_GRACE", default_value = "30s", value_parser = parse_duration)]
    pub reconcile_grace: Duration,
    /// After SIGTERM, how long running jobs get to checkpoint.
    #[arg(long, env = "JANITOR_SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
    /// How long an outage (database or Redis unavailable) may postpone a job
    /// before its deliveries start to count as attempts.
    #[arg(long, env = "JANITOR_OUTAGE_HORIZON", default_value = "1h", value_parser = parse_positive)]
    pub outage_horizon: Duration,
    /// A file the worker writes the time to after each reconciler pass that
    /// reached Postgres and Redis (every --reconcile-interval), for a
    /// healthcheck: older than a few intervals means stuck or cut off.
    #[arg(long, env = "JANITOR_HEALTH_FILE")]
    pub health_file: Option<std::path::PathBuf>,
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
    /// Delete at most this many items in this run (for cautious first runs).
    #[arg(long, global = true, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Operation {
    /// Temporary images whose expires_at has passed.
    Expired,
    /// All images of one session, whatever their type or expiry.
    Session {
        /// The session whose images go (1 to 255 bytes, no control characters).
        #[arg(value_parser = parse_session_id)]
        session_id: SessionId,
    },
    /// Result images of tasks finished more than N days ago (task rows stay).
    OldResults {
        /// Results of tasks finished more than this many days ago (1 to 36500).
        #[arg(long, default_value = "30", allow_negative_numbers = true, value_parser = parse_days_old)]
        days_old: DaysOld,
    },
    /// Files no image row references, older than a grace period.
    Orphaned {
        /// Grace period: only files older than this (by the newer of mtime
        /// and ctime) can be orphans. At least --min-grace, at most 3650d.
        #[arg(long, default_value = "1h", value_parser = parse_grace)]
        min_age: Duration,
    },
    /// Empty quarantine folders of jobs that ended more than the retention ago.
    PurgeTrash {
        /// From 1h to 3650d.
        #[arg(long, default_value = "7d", value_parser = parse_retention)]
        retention: Duration,
    },
    /// Expired, then old results, then orphaned, as one job.
    All {
        /// The old results phase's cutoff, as for `old-results`.
        #[arg(long, default_value = "30", allow_negative_numbers = true, value_parser = parse_days_old)]
        days_old: DaysOld,
        /// The orphan phase's grace period, as for `orphaned`.
        #[arg(long, default_value = "1h", value_parser = parse_grace)]
        min_age: Duration,
    },
}

impl Operation {
    /// The orphan grace period this operation asks for, if any.
    pub fn min_age(&self) -> Option<Duration> {
        match self {
            Operation::Orphaned { min_age } | Operation::All { min_age, .. } => Some(*min_age),
            _ => None,
        }
    }

    pub fn job(&self) -> CleanupJob {
        match self.clone() {
            Operation::Expired => CleanupJob::Expired,
            Operation::Session { session_id } => CleanupJob::Session { session_id },
            Operation::OldResults { days_old } => CleanupJob::OldResults { days_old },
            Operation::Orphaned { min_age } => CleanupJob::Orphaned { min_age_secs: min_age.as_secs() },
            Operation::PurgeTrash { retention } => CleanupJob::PurgeTrash { retention_secs: retention.as_secs() },
            Operation::All { days_old, min_age } => CleanupJob::All { days_old, min_age_secs: min_age.as_secs() },
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
    #[arg(long, value_parser = ["queued", "running", "completed", "failed", "skipped", "cancelled"])]
    pub status: Option<String>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

impl Cli {
    /// The command line as `janitor` parses it: the global settings are
    /// listed once, in `janitor --help`; each command's help lists its own
    /// flags and points there. (They are accepted after any command still.)
    pub fn definition() -> clap::Command {
        let mut command = <Self as clap::CommandFactory>::command();
        // Building propagates the global flags into every command; only then
        // can they be hidden there.
        command.build();
        let globals: Vec<clap::Id> =
            command.get_arguments().filter(|arg| arg.is_global_set()).map(|arg| arg.get_id().clone()).collect();
        hide_in_commands(&mut command, &globals);
        command
    }

    /// Parses the process's arguments; exits with clap's message and code 2
    /// on bad input.
    pub fn parse_args() -> Self {
        let matches = Self::definition().get_matches();
        <Self as clap::FromArgMatches>::from_arg_matches(&matches).unwrap_or_else(|err| err.exit())
    }
}

const GLOBALS_NOTE: &str =
    "Settings every command takes (database, Redis, storage root, batches, logging, retention): \
                            see `janitor --help`.";

fn hide_in_commands(command: &mut clap::Command, globals: &[clap::Id]) {
    for sub in command.get_subcommands_mut() {
        // `mut_args` keeps the arguments' order, which the built command's
        // flag index relies on (`mut_arg` would move the argument).
        let edited =
            std::mem::take(sub).mut_args(|arg| if globals.contains(arg.get_id()) { arg.hide(true) } else { arg });
        let note = match edited.get_after_help() {
            Some(help) => format!("{help}\n\n{GLOBALS_NOTE}"),
            None => GLOBALS_NOTE.to_owned(),
        };
        *sub = edited.after_help(note);
        hide_in_commands(sub, globals);
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory as _;

    use super::Cli;

    /// The global settings are listed in `janitor --help` only; a command's
    /// help lists its own flags and says where the others are, and the
    /// others are still accepted after the command.
    #[test]
    fn global_settings_are_listed_once() {
        let mut root = Cli::definition();
        let top = root.render_help().to_string();
        assert!(top.contains("--database-url") && top.contains("--redis-cluster"), "{top}");
        let worker = root.find_subcommand_mut("worker").unwrap().render_help().to_string();
        assert!(!worker.contains("--database-url") && !worker.contains("--batch-size"), "{worker}");
        assert!(worker.contains("--concurrency") && worker.contains("see `janitor --help`"), "{worker}");
        let run = root.find_subcommand_mut("run").unwrap().find_subcommand_mut("orphaned").unwrap();
        let orphaned = run.render_help().to_string();
        assert!(!orphaned.contains("--redis-url") && orphaned.contains("--min-age"), "{orphaned}");

        let matches = Cli::definition()
            .try_get_matches_from(["janitor", "worker", "--batch-size", "7", "--redis-cluster"])
            .unwrap();
        let cli = <Cli as clap::FromArgMatches>::from_arg_matches(&matches).unwrap();
        assert_eq!((cli.settings.batch_size, cli.settings.redis_cluster), (7, true));
    }

    /// Every flag and argument of every command says what it is for.
    #[test]
    fn every_argument_has_a_help_line() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for arg in command.get_arguments() {
                let builtin = matches!(arg.get_id().as_str(), "help" | "version");
                if !builtin && arg.get_help().is_none() && arg.get_long_help().is_none() {
                    missing.push(format!("{path} {}", arg.get_id()));
                }
            }
            for sub in command.get_subcommands() {
                if sub.get_about().is_none() && sub.get_name() != "help" {
                    missing.push(format!("{path} {} (the command)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "janitor", &mut missing);
        assert!(missing.is_empty(), "without a help line: {missing:#?}");
    }
}
