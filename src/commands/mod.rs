//! One function per command. Each returns the process's exit code; errors
//! that reach `main` exit with 1.

mod audit;
pub mod demo;
mod enqueue;
mod jobs;
mod prune;
mod results;
mod run;
mod schedules;
mod serve;
mod worker;

use std::process::ExitCode;

use anyhow::Context as _;
use sqlx::migrate::MigrateDatabase as _;

use crate::cli::{Cli, Command};
use crate::output;
use crate::settings::{redact, Settings};

pub use run::run;

/// Exit codes, as documented in the README.
pub mod exit {
    /// The job completed and every item was handled.
    pub const OK: u8 = 0;
    /// Infrastructure failure, or the job ended as failed.
    pub const FAILED: u8 = 1;
    /// Bad input (clap uses 2 as well): nothing was done.
    pub const USAGE: u8 = 2;
    /// The job completed, but some items could not be cleaned.
    pub const ITEM_ERRORS: u8 = 3;
    /// Stopped by a signal; the job can be resumed with `--job-id`.
    pub const INTERRUPTED: u8 = 130;
}

pub async fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Demo(args) => demo::demo(&cli.settings, args).await,
        Command::Migrate => migrate(&cli.settings).await,
        Command::Run(args) => run::run(&cli.settings, args).await,
        Command::Stats { json } => stats(&cli.settings, json).await,
        Command::Results(args) => results::show(&cli.settings, args).await,
        Command::Enqueue(args) => enqueue::enqueue(&cli.settings, args).await,
        Command::Worker(args) => worker::work(&cli.settings, args).await,
        Command::Scheduler { catch_up, health_file } => {
            schedules::scheduler(&cli.settings, catch_up, health_file).await
        }
        Command::Schedules { json } => schedules::list(&cli.settings, json).await,
        Command::Serve(args) => serve::serve(&cli.settings, args).await,
        Command::Restore { job_id, json } => restore(&cli.settings, job_id, json).await,
        Command::Audit { since, limit, json } => audit::show(&cli.settings, since, limit, json).await,
        Command::Cancel { job_id, json } => jobs::cancel(&cli.settings, job_id, json).await,
        Command::Retry { job_id, json } => jobs::retry(&cli.settings, job_id, json).await,
        Command::Dead { json } => jobs::dead(&cli.settings, json).await,
        Command::Discard { target } => jobs::discard(&cli.settings, &target).await,
        Command::Prune(args) => prune::prune(&cli.settings, args).await,
    }
}

async fn migrate(settings: &Settings) -> anyhow::Result<ExitCode> {
    let url = &settings.database_url;
    let exists = sqlx::Postgres::database_exists(url)
        .await
        .with_context(|| format!("cannot connect to the database server at {}", redact(url)))?;
    if !exists {
        sqlx::Postgres::create_database(url)
            .await
            .with_context(|| format!("cannot create the database {}", redact(url)))?;
        eprintln!("created database {}", redact(url));
    }
    let pool = settings.pool().await?;
    janitor_workers::MIGRATOR.run(&pool).await.context("applying migrations failed")?;
    eprintln!("migrations applied");
    Ok(ExitCode::from(exit::OK))
}

async fn stats(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let pool = settings.pool().await?;
    let stats = janitor_workers::jobs::stats::collect(&pool).await.map_err(crate::commands::schema_hint)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&stats)?);
    } else {
        print!("{}", output::stats(&stats));
    }
    Ok(ExitCode::from(exit::OK))
}

/// `janitor restore`: the same guards as the API's restore (see
/// `janitor_workers::admin::restore`); a refusal is exit 1 with its reason.
async fn restore(settings: &Settings, job_id: uuid::Uuid, json: bool) -> anyhow::Result<ExitCode> {
    let storage = janitor_workers::storage::Storage::open(&settings.storage_root)?;
    let pool = settings.pool().await?;
    let report = match janitor_workers::admin::restore(&pool, &storage, job_id).await? {
        Ok(report) => report,
        Err(refusal) => {
            eprintln!("error: {refusal}");
            return Ok(ExitCode::from(exit::FAILED));
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("restored {} files of job {job_id}", report.restored);
        for (path, why) in &report.conflicts {
            println!("  left in the trash: {path}: {why}");
        }
    }
    Ok(ExitCode::from(if report.conflicts.is_empty() { exit::OK } else { exit::ITEM_ERRORS }))
}

/// Turns "relation does not exist" into advice to migrate.
pub fn schema_hint(err: sqlx::Error) -> anyhow::Error {
    if let sqlx::Error::Database(db) = &err {
        if db.code().as_deref() == Some("42P01") {
            return anyhow::anyhow!("{db}: the database is not migrated; run `janitor migrate` first");
        }
    }
    anyhow::Error::new(err).context("database query failed")
}

/// Refuses (exit 2, nothing done) an orphan grace period shorter than the
/// `--min-grace` floor: a younger file may still be on its way to its row.
fn short_grace(settings: &Settings, operation: &crate::cli::Operation) -> Option<ExitCode> {
    let min_age = operation.min_age()?;
    if min_age >= settings.min_grace {
        return None;
    }
    eprintln!(
        "error: --min-age {} is shorter than the minimum grace period {}; a file the application is still \
         writing could look orphaned. Lower --min-grace (JANITOR_MIN_GRACE) to allow it",
        humantime::format_duration(min_age),
        humantime::format_duration(settings.min_grace)
    );
    Some(ExitCode::from(exit::USAGE))
}
