//! What drives janitor: periodic enqueues of every operation (some as dry
//! runs, some with a limit), and a monitor that photographs each finished
//! sweep's quarantine folder, so the oracle can count what it moved.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use janitor_workers::{CleanupJob, DaysOld, JobSpec};
use rand::Rng as _;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::files;
use crate::model::TrashSnapshot;
use crate::plan::{pause, pick, Rng};
use crate::world::{World, MIN_AGE};

/// Enqueues cleanups until told to stop.
pub async fn run(world: Arc<World>, mut rng: Rng, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause(&mut rng, 400, 1800)) => {}
        }
        let spec = next_job(&mut rng);
        let enqueued = world.producer.enqueue(&spec, Some("chaos")).await;
        let mut model = world.model();
        match enqueued {
            Ok(_) => model.stats.enqueued += 1,
            Err(_) => model.stats.enqueue_failed += 1,
        }
    }
}

fn next_job(rng: &mut Rng) -> JobSpec {
    let days_old = DaysOld::new(30).unwrap();
    let min_age_secs = MIN_AGE.as_secs();
    let job = match pick(rng, &[("expired", 24), ("old-results", 18), ("orphaned", 20), ("all", 16), ("purge", 3)]) {
        "expired" => CleanupJob::Expired,
        "old-results" => CleanupJob::OldResults { days_old },
        "orphaned" => CleanupJob::Orphaned { min_age_secs },
        "all" => CleanupJob::All { days_old, min_age_secs },
        // The default retention: nothing here is old enough, so a purge
        // must remove nothing.
        _ => CleanupJob::PurgeTrash { retention_secs: janitor_workers::job::DEFAULT_TRASH_RETENTION.as_secs() },
    };
    let mut spec = JobSpec::new(job, rng.gen_bool(0.06));
    if rng.gen_bool(0.08) {
        spec.limit = Some(rng.gen_range(1..=25));
    }
    spec
}

/// Operations whose quarantine folder the monitor photographs.
pub const SWEEPING: [&str; 2] = ["cleanup_orphaned_files", "cleanup_all"];

/// Photographs the quarantine folder of every sweeping job as soon as it has
/// finished (nothing may add to it afterwards), until told to stop.
pub async fn monitor(world: Arc<World>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        snapshot_finished(&world).await;
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(150)) => {}
        }
    }
}

/// Takes the missing snapshots; returns how many finished sweeping jobs
/// still had none before this call.
pub async fn snapshot_finished(world: &World) -> usize {
    let finished: Vec<(Uuid, DateTime<Utc>)> = match sqlx::query_as(
        "SELECT job_id, now() FROM job_results
         WHERE status IN ('completed', 'failed', 'skipped') AND operation = ANY($1)",
    )
    .bind(&SWEEPING[..])
    .fetch_all(&world.env.pool)
    .await
    {
        Ok(rows) => rows,
        Err(err) => panic!("the monitor reads job_results: {err}"),
    };
    let missing: Vec<(Uuid, DateTime<Utc>)> = {
        let model = world.model();
        finished.into_iter().filter(|(job, _)| !model.snapshots.contains_key(job)).collect()
    };
    for (job, at) in &missing {
        let files = files::trash_of(world.env.store.root(), *job);
        world.model().snapshots.insert(*job, TrashSnapshot { files, at: *at });
    }
    missing.len()
}
