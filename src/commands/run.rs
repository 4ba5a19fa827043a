//! `janitor run`: runs one job in this process through the engine, exactly
//! as a queue worker would, and prints its result.

use std::process::ExitCode;

use janitor_workers::engine::EngineError;
use janitor_workers::{JobSpec, RunControl, RunOutcome};
use uuid::Uuid;

use super::exit;
use crate::cli::RunArgs;
use crate::output;
use crate::settings::Settings;

pub async fn run(settings: &Settings, args: RunArgs) -> anyhow::Result<ExitCode> {
    if let Some(refused) = super::short_grace(settings, &args.operation) {
        return Ok(refused);
    }
    let spec = JobSpec { job: args.operation.job(), dry_run: args.dry_run, limit: args.limit };
    let engine = settings.engine().await?;
    execute(&engine, &spec, args.job_id, args.json).await
}

/// Runs a job in this process (a new one, or `job_id` to resume or re-read
/// it), prints its result and returns the exit code.
pub async fn execute(
    engine: &janitor_workers::Engine,
    spec: &JobSpec,
    job_id: Option<Uuid>,
    json: bool,
) -> anyhow::Result<ExitCode> {
    let job_id = job_id.unwrap_or_else(Uuid::new_v4);
    let control = RunControl { worker: format!("cli:{}:{}", hostname(), std::process::id()), ..RunControl::default() };
    // Ctrl-C or SIGTERM: finish the batch under way, then stop resumably.
    let cancel = control.cancel.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        cancel.cancel();
    });

    let outcome = engine.run(job_id, spec, &control).await;
    let record = match outcome {
        Ok(RunOutcome::Finished(record)) => record,
        Ok(RunOutcome::Duplicate) => {
            eprintln!("job {job_id} is being run by another process; see janitor results {job_id}");
            return Ok(ExitCode::from(exit::FAILED));
        }
        Ok(RunOutcome::Interrupted) => {
            eprintln!("interrupted; resume with: janitor run <same operation> --job-id {job_id}");
            return Ok(ExitCode::from(exit::INTERRUPTED));
        }
        Err(EngineError::Store(janitor_workers::results::StoreError::Database(err))) => {
            return Err(super::schema_hint(err)
                .context(format!("job {job_id} stopped; rerun with --job-id {job_id} to resume")));
        }
        Err(err) => {
            return Err(anyhow::Error::new(err)
                .context(format!("job {job_id} stopped; rerun with --job-id {job_id} to resume")))
        }
    };
    print(&record, json)
}

/// Prints a finished job's result and returns the exit code it implies.
pub fn print(record: &janitor_workers::JobRecord, json: bool) -> anyhow::Result<ExitCode> {
    let result = record.result.clone().unwrap_or_else(|| janitor_workers::report::result_json(record));
    if json {
        println!("{}", serde_json::to_string_pretty(&result)?);
    } else {
        print!("{}", output::result(&result));
    }
    Ok(ExitCode::from(exit_code(record)))
}

pub fn exit_code(record: &janitor_workers::JobRecord) -> u8 {
    match record.status.as_str() {
        "completed" if record.error_count > 0 => exit::ITEM_ERRORS,
        "completed" => exit::OK,
        _ => exit::FAILED,
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|name| name.trim().to_owned())
        .unwrap_or_else(|_| "localhost".to_owned())
}
