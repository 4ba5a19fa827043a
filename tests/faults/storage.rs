//! Storage that misbehaves during a run: a directory where a file should
//! be, a path whose parent is a file, and files (and a whole folder) that
//! vanish while the run is under way. Each is an error item or is simply
//! not counted; the run goes on to the end and its counts stay exact.

use std::collections::BTreeSet;
use std::fs;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use uuid::Uuid;

use crate::fixtures::{details, job, quarantined_files, seed_expired, stored_files, wait_for_job};
use crate::harness::Env;
use crate::support::{count_images, insert_image, Image};

/// Small paced batches, so the test can act while the run is under way.
const SLOW: [&str; 4] = ["--batch-size", "20", "--max-deletes-per-sec", "300"];

/// Expired rows seeded for the row test, and which of them are broken.
const EXPIRED: usize = 400;
const SIZE: i64 = 10;

fn expired_path(i: usize) -> String {
    format!("photos/faults/{}/{i}.jpg", i / 100)
}

/// Rows whose path is a directory holding a file, and rows whose path goes
/// through a regular file.
fn directory_in_place(i: usize) -> bool {
    i % 40 == 7
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn broken_and_vanishing_paths_are_errors_or_uncounted_and_the_run_completes(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired(&env.pool, &env.store, "faults", EXPIRED, SIZE).await;
    let mut broken = BTreeSet::new();
    for i in (0..EXPIRED).filter(|i| directory_in_place(*i)) {
        let path = expired_path(i);
        fs::remove_file(env.store.path(&path)).unwrap();
        env.store.write(&format!("{path}/inside.jpg"), 3);
        broken.insert(path);
    }
    // A row whose parent folder is a regular file (no row references it).
    let mut through_file = BTreeSet::new();
    for i in 0..5 {
        env.store.write(&format!("photos/blocker-{i}"), 3);
        let path = format!("photos/blocker-{i}/x.jpg");
        insert_image(&env.pool, None, &Image::expired(&path, SIZE)).await;
        through_file.insert(path);
    }

    let job_id = Uuid::new_v4();
    let id = job_id.to_string();
    let args = [&["run", "expired", "--json", "--job-id", &id][..], &SLOW].concat();
    let vanished = async {
        wait_for_job(&env.pool, job_id, "the run has committed a batch", Duration::from_secs(20), |r| r.1 > 0).await;
        // Files the run has not reached yet disappear under it.
        (300..EXPIRED)
            .filter(|i| i % 10 == 3)
            .filter(|i| fs::remove_file(env.store.path(&expired_path(*i))).is_ok())
            .count()
    };
    let ((code, stdout, stderr), vanished) = tokio::join!(env.janitor(&args), vanished);

    let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let row = job(&env.pool, job_id).await.unwrap();
    let (bytes, error_count, errors) = details(&env.pool, job_id).await;
    assert_eq!(code, 3, "completed with item errors: {stderr}");
    assert_eq!(result["status"], "completed", "{result}");
    let total = EXPIRED + through_file.len();
    let failed = broken.len() + through_file.len();
    assert!(vanished > 0, "the test removed files mid-run");
    assert_eq!(row.1, (total - failed) as i64, "vanished files count as deleted (the goal is reached): {row:?}");
    assert_eq!(bytes, (total - failed) as i64 * SIZE);
    assert_eq!(error_count, failed as i64, "{errors}");
    for item in errors.as_array().unwrap() {
        let (path, error) = (item["path"].as_str().unwrap(), item["error"].as_str().unwrap());
        match () {
            () if broken.contains(path) => assert_eq!(error, "is a directory", "{item}"),
            () if through_file.contains(path) => {
                assert_eq!(error, "a parent in the path is not a directory", "{item}")
            }
            () => panic!("unexpected error item {item}"),
        }
    }
    let left: BTreeSet<String> =
        sqlx::query_scalar("SELECT storage_path FROM images").fetch_all(&env.pool).await.unwrap().into_iter().collect();
    assert_eq!(left, broken.union(&through_file).cloned().collect(), "exactly the failed rows stay");
    for path in &broken {
        assert!(env.store.exists(&format!("{path}/inside.jpg")), "nothing inside {path} was touched");
    }
    assert_eq!(stored_files(&env.store), broken.len() + through_file.len(), "only the broken paths' files stay");
}

/// Orphans seeded for the sweep, in folders `photos/sweep/00` to `/14`.
const ORPHANS: usize = 1500;
const FOLDERS: usize = 15;
const ORPHAN_SIZE: usize = 7;

fn orphan_path(i: usize) -> String {
    format!("photos/sweep/{:02}/{i:04}.jpg", i % FOLDERS)
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn files_vanishing_mid_sweep_are_not_counted_and_the_sweep_completes(pool: PgPool) {
    let env = Env::new(pool);
    for i in 0..ORPHANS {
        env.store.write(&orphan_path(i), ORPHAN_SIZE);
    }
    // Referenced files among them must survive (none in the last folder,
    // which the test removes whole).
    for i in 0..30 {
        insert_image(
            &env.pool,
            Some(&env.store),
            &Image::permanent(&format!("photos/sweep/{:02}/kept-{i}.jpg", i % (FOLDERS - 1)), 5),
        )
        .await;
    }

    let job_id = Uuid::new_v4();
    let id = job_id.to_string();
    // Nearly every file is an orphan here, so the ratio guard is lifted.
    let sweep = [
        "run",
        "orphaned",
        "--min-age",
        "0s",
        "--min-grace",
        "0s",
        "--max-orphan-ratio",
        "1",
        "--json",
        "--job-id",
        &id,
    ];
    let args = [&sweep[..], &SLOW].concat();
    let removed = async {
        wait_for_job(&env.pool, job_id, "the sweep has committed a batch", Duration::from_secs(20), |r| r.1 > 0).await;
        // Every third file of the later folders, then the last folder whole:
        // the walk has listed them, and the deletions find them gone.
        let mut removed = (0..ORPHANS)
            .filter(|i| i % FOLDERS >= 8 && i % 3 == 0)
            .filter(|i| fs::remove_file(env.store.path(&orphan_path(*i))).is_ok())
            .count();
        let last = env.store.path(&format!("photos/sweep/{:02}", FOLDERS - 1));
        for entry in fs::read_dir(&last).unwrap().filter_map(Result::ok) {
            if fs::remove_file(entry.path()).is_ok() {
                removed += 1;
            }
        }
        fs::remove_dir(&last).unwrap();
        removed
    };
    let ((code, stdout, stderr), removed) = tokio::join!(env.janitor(&args), removed);

    let result: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("{e}: {stdout}\n{stderr}"));
    let row = job(&env.pool, job_id).await.unwrap();
    let (bytes, error_count, errors) = details(&env.pool, job_id).await;
    eprintln!("vanishing sweep: exit {code}, removed by the test {removed}, row {row:?}, errors {errors}");
    assert!(code == 0 || code == 3, "the sweep ran to its end: {code} {stderr}");
    assert_eq!(result["status"], "completed", "{result}");
    assert!(removed > 0, "the test removed files mid-sweep");
    assert_eq!(row.1 + removed as i64, ORPHANS as i64, "every orphan counted once, vanished ones not at all: {row:?}");
    assert_eq!(bytes, row.1 * ORPHAN_SIZE as i64);
    for item in errors.as_array().unwrap() {
        let error = item["error"].as_str().unwrap();
        assert!(error.contains("No such file"), "only vanished entries may be error items: {item}");
    }
    assert_eq!(error_count, errors.as_array().unwrap().len() as i64);
    assert_eq!(count_images(&env.pool).await, 30, "referenced rows stay");
    assert_eq!(stored_files(&env.store), 30, "only referenced files stay");
    let quarantined = quarantined_files(&env.store);
    assert!(quarantined == 0 || quarantined as i64 == row.1, "{quarantined} files quarantined, {row:?}");
}
