//! `janitor enqueue`: puts a job on the queue, and with `--wait` prints its
//! result exactly as `janitor run` would.

use std::process::ExitCode;

use janitor_workers::producer::ProducerError;
use janitor_workers::JobSpec;

use super::exit;
use crate::cli::EnqueueArgs;
use crate::settings::Settings;

pub async fn enqueue(settings: &Settings, args: EnqueueArgs) -> anyhow::Result<ExitCode> {
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
    match producer.wait(enqueued.job_id, args.timeout).await {
        Ok(record) => super::run::print(&record, args.json),
        Err(err @ ProducerError::Timeout { .. }) => {
            eprintln!("error: {err}");
            Ok(ExitCode::from(exit::FAILED))
        }
        Err(err) => Err(err.into()),
    }
}
