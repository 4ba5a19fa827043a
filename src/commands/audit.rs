//! `janitor audit`: the admin API's audit log.

use std::process::ExitCode;
use std::time::Duration;

use super::exit;
use crate::http::audit;
use crate::settings::Settings;

pub async fn show(settings: &Settings, since: Duration, limit: i64, json: bool) -> anyhow::Result<ExitCode> {
    let pool = settings.pool().await?;
    let from = chrono::Utc::now() - chrono::Duration::from_std(since)?;
    let rows = audit::since(&pool, from, limit).await.map_err(super::schema_hint)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::from(exit::OK));
    }
    println!("{:<24}  {:<12}  {:<6}  {:<46}  {:>4}  {:<12}  JOB", "AT", "WHO", "METHOD", "PATH", "CODE", "OUTCOME");
    for row in rows {
        println!(
            "{:<24}  {:<12}  {:<6}  {:<46}  {:>4}  {:<12}  {}",
            janitor_workers::report::rfc3339(row.at),
            row.actor.as_deref().unwrap_or("-"),
            row.method,
            row.path,
            row.status,
            row.outcome,
            row.job_id.map(|id| id.to_string()).unwrap_or_default()
        );
    }
    Ok(ExitCode::from(exit::OK))
}
