//! A bulk job's estimated total (for the console's progress bar and ETA),
//! taken once when it first starts: the candidates of a row job, the files
//! the last completed sweep looked at for a sweep, none for a session.

use janitor_workers::progress::Checkpoint;
use janitor_workers::{CleanupJob, JobRecord, SessionId};
use sqlx::PgPool;

use crate::harness::{dry, engine, run, spec};
use crate::support::{insert_image, Image, Store};

fn estimate(record: &JobRecord) -> Option<i64> {
    let checkpoint: Checkpoint = serde_json::from_value(record.checkpoint.clone().unwrap()).unwrap();
    checkpoint.estimated_total
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn bulk_jobs_record_an_estimated_total_when_they_start(pool: PgPool) {
    let store = Store::new();
    for i in 0..7 {
        insert_image(&pool, Some(&store), &Image::expired(&format!("photos/e/{i}.jpg"), 10)).await;
    }
    insert_image(&pool, Some(&store), &Image::fresh("photos/f.jpg", 10).session("s-1")).await;
    store.write("results/o/orphan.jpg", 3);
    let engine = engine(&pool, &store, 3);

    let planned = run(&engine, &dry(CleanupJob::Expired)).await;
    assert_eq!(estimate(&planned), Some(7), "the expired candidates");
    let expired = run(&engine, &spec(CleanupJob::Expired)).await;
    assert_eq!((estimate(&expired), expired.deleted_count), (Some(7), 7));

    // No sweep has completed yet: no estimate. The next one is estimated
    // from this one's files.
    let first = run(&engine, &spec(CleanupJob::Orphaned { min_age_secs: 0 })).await;
    assert_eq!(estimate(&first), None);
    let scanned: i64 = serde_json::from_value(first.checkpoint.clone().unwrap()["files_scanned"].clone()).unwrap();
    assert!(scanned > 0);
    let second = run(&engine, &spec(CleanupJob::Orphaned { min_age_secs: 0 })).await;
    assert_eq!(estimate(&second), Some(scanned));

    let session = run(&engine, &spec(CleanupJob::Session { session_id: SessionId::parse("s-1").unwrap() })).await;
    assert_eq!((estimate(&session), session.deleted_count), (None, 1), "a session's job has no estimate");
}
