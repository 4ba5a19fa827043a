//! `janitor prune`: removes janitor's own records older than their
//! retention, in this process, as a `prune_records` job (the same job the
//! scheduler enqueues daily), and prints its result with counts per kind.

use std::process::ExitCode;

use janitor_workers::layout::Layout;
use janitor_workers::{CleanupJob, JobSpec};

use crate::cli::PruneArgs;
use crate::settings::Settings;

pub async fn prune(settings: &Settings, args: PruneArgs) -> anyhow::Result<ExitCode> {
    let spec = JobSpec::new(CleanupJob::Prune { retention: settings.retention.get() }, args.dry_run);
    // Dead letters and the ids hash live in the queue's Redis.
    let engine = settings.engine().await?.with_queue(settings.redis()?, Layout::new(&settings.queue));
    super::run::execute(&engine, &spec, args.job_id, args.json).await
}
