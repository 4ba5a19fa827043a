//! `janitor cancel`, `retry`, `dead` and `discard`: what an operator does to
//! jobs. Each is audited by the admin API when done over HTTP; on the
//! command line the actor is `cli`.

use std::process::ExitCode;

use janitor_workers::admin;
use janitor_workers::results::Cancelled;
use serde_json::json;
use uuid::Uuid;

use super::exit;
use crate::settings::Settings;

pub async fn cancel(settings: &Settings, job_id: Uuid, json: bool) -> anyhow::Result<ExitCode> {
    let producer = settings.producer().await?;
    let (status, message, code) = match admin::cancel(&producer, job_id, "cli").await? {
        Cancelled::Now(_) => ("cancelled", format!("job {job_id} cancelled; it will not start"), exit::OK),
        Cancelled::Requested => {
            ("cancelling", format!("job {job_id} is running; it stops at its next batch boundary"), exit::OK)
        }
        Cancelled::AlreadyEnded(status) => {
            let message = format!("job {job_id} already ended as {status}; nothing to cancel");
            ("ended", message, exit::FAILED)
        }
        Cancelled::NotFound => ("not_found", format!("no job {job_id} is recorded"), exit::FAILED),
    };
    report(json, json!({"job_id": job_id, "status": status, "message": message}), &message, code)
}

pub async fn retry(settings: &Settings, job_id: Uuid, json: bool) -> anyhow::Result<ExitCode> {
    let producer = settings.producer().await?;
    match admin::retry(&producer, job_id).await? {
        Ok(()) => {
            let message = format!("job {job_id} queued again; it resumes from its checkpoint");
            report(json, json!({"job_id": job_id, "status": "queued", "message": message}), &message, exit::OK)
        }
        Err(why) => report(json, json!({"job_id": job_id, "error": why}), &why, exit::FAILED),
    }
}

pub async fn dead(settings: &Settings, json: bool) -> anyhow::Result<ExitCode> {
    let producer = settings.producer().await?;
    let dead = admin::dead_letters(&producer).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&dead)?);
    } else if dead.is_empty() {
        println!("no dead letters");
    } else {
        for entry in &dead {
            let job = entry.job_id.map_or_else(|| "-".to_owned(), |id| id.to_string());
            let operation = entry.operation.as_deref().unwrap_or("-");
            println!("{}  {:<7}  {}  {job}  {operation}  {}", entry.dead_at, entry.lane, entry.entry_id, entry.reason);
        }
    }
    Ok(ExitCode::from(exit::OK))
}

pub async fn discard(settings: &Settings, target: &str) -> anyhow::Result<ExitCode> {
    let producer = settings.producer().await?;
    match admin::discard(&producer, target).await? {
        0 => {
            eprintln!("error: no dead letter {target}");
            Ok(ExitCode::from(exit::FAILED))
        }
        removed => {
            println!("discarded {removed} dead letter(s)");
            Ok(ExitCode::from(exit::OK))
        }
    }
}

fn report(json: bool, value: serde_json::Value, message: &str, code: u8) -> anyhow::Result<ExitCode> {
    if json {
        println!("{value}");
    } else if code == exit::OK {
        println!("{message}");
    } else {
        eprintln!("error: {message}");
    }
    Ok(ExitCode::from(code))
}
