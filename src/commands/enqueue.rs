//! `janitor enqueue`: puts a job on the queue, and with `--wait` prints its
//! result exactly as `janitor run` would.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::time::Duration;

use janitor_workers::producer::ProducerError;
use janitor_workers::JobSpec;

use super::exit;
use crate::cli::EnqueueArgs;
use crate::settings::Settings;

pub async fn enqueue(settings: &Settings, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
    if let Some(refused) = super::short_grace(settings, &args.operation) {
        return Ok(refused);
    }
    let spec = JobSpec { job: args.operation.job(), dry_run: args.dry_run, limit: args.limit };
    let producer = settings.producer().await?;
    let enqueued = producer
        .enqueue(&spec, Some("cli"))
        .await
        .map_err(|err| anyhow::Error::new(err).context("enqueue failed; nothing was queued"))?;
    if !args.wait {
        if args.json {
            let status = serde_json::json!({
                "job_id": enqueued.job_id,
                "status": "queued",
                "deduplicated": enqueued.deduplicated,
            });
            println!("{status}");
        } else {
            println!("{}", enqueued.job_id);
        }
        return Ok(ExitCode::from(exit::OK));
    }
    eprintln!("job {} queued; waiting for it to finish", enqueued.job_id);
    match wait_with_progress(&producer, enqueued.job_id, args.timeout).await {
        Ok(record) => super::run::print(&record, args.json),
        Err(err @ ProducerError::Timeout { .. }) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(exit::FAILED))
        }
        Err(err) => Err(err.into()),
    }
}

/// Waits for the job, showing its progress on stderr: a live line on a
/// terminal, a plain line per change otherwise (logs, CI).
async fn wait_with_progress(
    producer: &janitor_workers::producer::Producer,
    job_id: uuid::Uuid,
    timeout: Duration,
) -> Result<janitor_workers::JobRecord, ProducerError> {
    let terminal = std::io::stderr().is_terminal();
    let bar = terminal.then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = String::new();
    let outcome = loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match producer.wait(job_id, left.min(Duration::from_millis(500))).await {
            Err(ProducerError::Timeout { .. }) if !left.is_zero() => {}
            other => break other,
        }
        let Ok(Some(row)) = janitor_workers::results::get(producer.pool(), job_id).await else { continue };
        let line = format!(
            "{}: deleted {}, skipped {}, errors {} ({})",
            row.status, row.deleted_count, row.skipped_count, row.error_count, row.operation
        );
        match &bar {
            Some(bar) => bar.set_message(line.clone()),
            None if line != last => eprintln!("{line}"),
            None => {}
        }
        last = line;
    };
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    outcome
}
