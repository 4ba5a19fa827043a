//! Running the engine in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use janitor_workers::{CleanupJob, Engine, EngineSettings, JobRecord, JobSpec, RunControl, RunOutcome};
use sqlx::PgPool;
use uuid::Uuid;

use crate::support::Store;

pub fn engine(pool: &PgPool, store: &Store, batch_size: usize) -> Engine {
    // Tests of one behaviour at a time use tiny stores, where most files
    // are orphans: the ratio guard has its own tests (`guards.rs`).
    // They also sweep files written a moment ago (`min_age_secs: 0`).
    let settings = EngineSettings {
        batch_size,
        unlink_concurrency: 4,
        max_orphan_ratio: 1.0,
        min_grace: std::time::Duration::ZERO,
        ..EngineSettings::default()
    };
    Engine::new(pool.clone(), store.root(), settings)
}

pub fn spec(job: CleanupJob) -> JobSpec {
    JobSpec::new(job, false)
}

pub fn dry(job: CleanupJob) -> JobSpec {
    JobSpec::new(job, true)
}

/// Runs a job to its end and returns its final record.
pub async fn run(engine: &Engine, spec: &JobSpec) -> JobRecord {
    run_as(engine, Uuid::new_v4(), spec).await
}

pub async fn run_as(engine: &Engine, job_id: Uuid, spec: &JobSpec) -> JobRecord {
    let control = RunControl { worker: "test".into(), ..RunControl::default() };
    match engine.run(job_id, spec, &control).await.expect("job runs") {
        RunOutcome::Finished(record) => *record,
        RunOutcome::Interrupted => panic!("job was interrupted"),
        RunOutcome::Duplicate => panic!("job was refused as a duplicate"),
    }
}

/// Runs a job and stops it once `batches` batches have committed, as a
/// crash right after a commit would.
pub async fn run_until(engine: &Engine, job_id: Uuid, spec: &JobSpec, batches: u64) -> RunOutcome {
    let seen = Arc::new(AtomicU64::new(0));
    let control = RunControl { worker: "test-crashing".into(), ..RunControl::default() };
    let cancel = control.cancel.clone();
    let counter = Arc::clone(&seen);
    let control = RunControl {
        on_batch: Some(Arc::new(move |_| {
            if counter.fetch_add(1, Ordering::SeqCst) + 1 >= batches {
                cancel.cancel();
            }
        })),
        ..control
    };
    engine.run(job_id, spec, &control).await.expect("job runs")
}
