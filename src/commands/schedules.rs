//! `janitor scheduler` and `janitor schedules`.

use std::process::ExitCode;
use std::time::Duration;

use chrono::{DateTime, Utc};
use janitor_workers::schedule::Schedule;
use janitor_workers::scheduler::{self, SchedulerSettings, TickRecord};
use serde_json::{json, Value};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::exit;
use crate::settings::Settings;

/// The schedules, or exit code 2 with the reason. A prune schedule gets
/// this process's retention settings.
fn load(settings: &Settings) -> Result<Vec<Schedule>, ExitCode> {
    let schedules = crate::config::schedules(settings.config.as_deref()).map_err(|err| {
        eprintln!("error: {err:#}");
        ExitCode::from(exit::USAGE)
    })?;
    Ok(schedules.into_iter().map(|s| s.with_retention(settings.retention.get())).collect())
}

pub async fn scheduler(
    settings: &Settings,
    catch_up: Duration,
    health_file: Option<std::path::PathBuf>,
) -> anyhow::Result<ExitCode> {
    let schedules = match load(settings) {
        Ok(schedules) => schedules,
        Err(code) => return Ok(code),
    };
    let producer = settings.producer().await?;
    let pool = settings.pool().await?;
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        signal.cancel();
    });
    let scheduler_settings = SchedulerSettings { catch_up, health_file, ..SchedulerSettings::default() };
    scheduler::run(pool, producer, schedules, scheduler_settings, shutdown).await?;
    Ok(ExitCode::from(exit::OK))
}

pub async fn list(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let schedules = match load(settings) {
        Ok(schedules) => schedules,
        Err(code) => return Ok(code),
    };
    let pool = settings.pool().await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT now()").fetch_one(&pool).await?;
    let mut rows = Vec::new();
    for schedule in &schedules {
        rows.push(describe(&pool, &settings.queue, schedule, now).await.map_err(super::schema_hint)?);
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        for row in &rows {
            print_row(row);
        }
    }
    Ok(ExitCode::from(exit::OK))
}

async fn describe(pool: &PgPool, queue: &str, schedule: &Schedule, now: DateTime<Utc>) -> sqlx::Result<Value> {
    // The last tick (run or skipped), and the last tick that ran, on this
    // process's queue.
    let (last_tick, last_run) = scheduler::last_ticks(pool, queue, &schedule.name).await?;
    let tick_json = |tick: Option<TickRecord>| {
        tick.map(|t| {
            json!({ "scheduled_at": t.scheduled_at, "job_id": t.job_id, "outcome": t.outcome, "reason": t.reason,
                    "status": t.status, "deleted_count": t.deleted_count, "error_count": t.error_count })
        })
    };
    Ok(json!({
        "name": schedule.name,
        "cron": schedule.cron_text,
        "timezone": schedule.timezone.name(),
        "operation": schedule.spec.job.operation(),
        "params": schedule.spec.params(),
        "dry_run": schedule.spec.dry_run,
        "next_fire": schedule.next_after(now),
        "last_tick": tick_json(last_tick),
        "last_run": tick_json(last_run),
    }))
}

fn print_row(row: &Value) {
    let text = |v: &Value| v.as_str().map(str::to_owned).unwrap_or_else(|| "-".into());
    println!("{} ({} {}): {}", text(&row["name"]), text(&row["cron"]), text(&row["timezone"]), text(&row["operation"]));
    println!("  next fire: {}", text(&row["next_fire"]));
    match row["last_run"].as_object() {
        Some(run) => println!(
            "  last run:  {} job {} {} (deleted {}, errors {})",
            text(&run["scheduled_at"]),
            text(&run["job_id"]),
            text(&run["status"]),
            run["deleted_count"],
            run["error_count"]
        ),
        None => println!("  last run:  never"),
    }
    if let Some(tick) = row["last_tick"].as_object().filter(|t| t["outcome"] == "skipped") {
        println!("  last tick: {} skipped ({})", text(&tick["scheduled_at"]), text(&tick["reason"]));
    }
}
