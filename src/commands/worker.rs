//! `janitor worker`: runs queued jobs until SIGINT or SIGTERM.

use std::process::ExitCode;

use anyhow::Context as _;
use janitor_workers::layout::Layout;
use janitor_workers::worker::{self, WorkerSettings};
use tokio_util::sync::CancellationToken;

use super::exit;
use crate::cli::WorkerArgs;
use crate::settings::Settings;

pub async fn work(settings: &Settings, args: WorkerArgs) -> anyhow::Result<ExitCode> {
    // The queue's Redis, for the prune job's dead letters and ids hash.
    let engine = settings.engine().await?.with_queue(settings.redis()?, Layout::new(&settings.queue));
    let worker_settings = WorkerSettings {
        session_concurrency: args.concurrency as usize,
        bulk_concurrency: args.bulk_concurrency as usize,
        lease: args.lease,
        max_attempts: args.max_attempts,
        retry_base: args.retry_base,
        reconcile_interval: args.reconcile_interval,
        reconcile_grace: args.reconcile_grace,
        shutdown_timeout: args.shutdown_timeout,
        outage_horizon: args.outage_horizon,
        health_file: args.health_file,
        ..WorkerSettings::new(Layout::new(&settings.queue))
    };
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        crate::shutdown_signal().await;
        tracing::info!("shutdown signal received; finishing the current batches");
        signal.cancel();
    });
    worker::run(engine, settings.redis()?, worker_settings, shutdown)
        .await
        .with_context(|| format!("worker stopped; Redis at {}", settings.redis_shown()))?;
    Ok(ExitCode::from(exit::OK))
}
