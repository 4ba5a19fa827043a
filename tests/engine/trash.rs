//! The trash behind the wall: quarantine and the purge resolve every path
//! beneath the storage root without following symbolic links, and never
//! overwrite what they find. Each test plants the symlink or the file that
//! an adversarial review used to get a file moved, written or deleted where
//! it must not be.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use janitor_workers::storage::{RelativePath, Removal, Storage};
use janitor_workers::CleanupJob;
use sqlx::PgPool;
use uuid::Uuid;

use crate::harness::{engine, run, spec};
use crate::support::{insert_image, Image, Store};

/// Every file under `dir`, relative to it: what a test finds where nothing
/// may have landed or been deleted.
fn files_under(dir: &Path) -> Vec<String> {
    let mut files = Vec::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false).sort_by_file_name() {
        let entry = entry.unwrap();
        if !entry.file_type().is_dir() {
            files.push(entry.path().strip_prefix(dir).unwrap().display().to_string());
        }
    }
    files
}

/// Backdates a folder, so that a purge with any retention finds it old.
fn backdate(folder: &Path) {
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(2 * 3600);
    fs::File::open(folder).unwrap().set_modified(old).unwrap();
}

fn purge() -> janitor_workers::JobSpec {
    spec(CleanupJob::PurgeTrash { retention_secs: 3600 })
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_symlinked_trash_keeps_every_orphan_in_place(pool: PgPool) {
    let store = Store::new();
    insert_image(&pool, Some(&store), &Image::permanent("templates/keep.png", 1)).await;
    store.write("photos/o/0.jpg", 1);
    store.write("photos/o/1.jpg", 1);
    let outside = tempfile::tempdir().unwrap();
    symlink(outside.path(), store.path(".janitor-trash")).unwrap();

    let record = run(&engine(&pool, &store, 10), &spec(CleanupJob::Orphaned { min_age_secs: 0 })).await;
    assert_eq!(files_under(outside.path()), Vec::<String>::new(), "nothing was moved outside the root");
    assert!(store.exists("photos/o/0.jpg") && store.exists("photos/o/1.jpg"));
    assert_eq!((record.deleted_count, record.error_count), (0, 2));
    let error = record.errors[0]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("symbolic link"), "{error}");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn quarantine_never_overwrites_an_earlier_file_of_the_same_job(_pool: PgPool) {
    let store = Store::new();
    let storage = Storage::open(store.root()).unwrap();
    let (job_id, path) = (Uuid::new_v4(), RelativePath::parse("photos/a/x.jpg").unwrap());
    let trashed = format!(".janitor-trash/{job_id}/photos/a/x.jpg");
    store.write("photos/a/x.jpg", 1);
    assert_eq!(storage.quarantine(&path, job_id), Removal::Removed);
    // A second file appears at the same path and is swept by the same job.
    store.write("photos/a/x.jpg", 2);

    let outcome = storage.quarantine(&path, job_id);
    assert!(matches!(&outcome, Removal::Failed(why) if why.starts_with("already in the trash")), "{outcome:?}");
    assert_eq!(fs::metadata(store.path(&trashed)).unwrap().len(), 1, "the first file is kept");
    assert_eq!(fs::metadata(store.path("photos/a/x.jpg")).unwrap().len(), 2, "the second stays in place");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_purge_deletes_nothing_through_a_symlinked_trash(pool: PgPool) {
    let store = Store::new();
    let outside = tempfile::tempdir().unwrap();
    let job_folder = outside.path().join(Uuid::new_v4().to_string());
    fs::create_dir_all(job_folder.join("photos/a")).unwrap();
    fs::write(job_folder.join("photos/a/x.jpg"), b"keep").unwrap();
    backdate(&job_folder);
    symlink(outside.path(), store.path(".janitor-trash")).unwrap();

    let record = run(&engine(&pool, &store, 10), &purge()).await;
    assert!(job_folder.join("photos/a/x.jpg").exists(), "nothing outside the root was deleted");
    assert_eq!((record.status.as_str(), record.deleted_count), ("failed", 0));
    let reason = record.last_error.unwrap();
    assert!(reason.contains("symbolic link"), "{reason}");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_purge_never_follows_a_symlinked_job_folder_or_a_symlink_inside_one(pool: PgPool) {
    let store = Store::new();
    let outside = tempfile::tempdir().unwrap();
    fs::write(outside.path().join("x.jpg"), b"keep").unwrap();
    fs::create_dir(store.path(".janitor-trash")).unwrap();
    let linked = Uuid::new_v4();
    symlink(outside.path(), store.path(&format!(".janitor-trash/{linked}"))).unwrap();
    // A real job folder, with a file and a symlink to the outside folder.
    let real = Uuid::new_v4();
    store.write(&format!(".janitor-trash/{real}/photos/a/x.jpg"), 3);
    symlink(outside.path(), store.path(&format!(".janitor-trash/{real}/photos/a/link"))).unwrap();
    backdate(&store.path(&format!(".janitor-trash/{real}")));
    // The link's own time cannot be backdated: its job ended long ago.
    sqlx::query(
        "INSERT INTO job_results (job_id, operation, status, finished_at)
         VALUES ($1, 'cleanup_orphaned_files', 'completed', now() - interval '2 hours')",
    )
    .bind(linked)
    .execute(&pool)
    .await
    .unwrap();

    let record = run(&engine(&pool, &store, 10), &purge()).await;
    assert_eq!(files_under(outside.path()), ["x.jpg"], "nothing outside the root was deleted");
    assert!(!store.exists(&format!(".janitor-trash/{real}")), "the real folder was purged");
    assert!(store.exists(&format!(".janitor-trash/{linked}")), "the symlink is left alone");
    assert_eq!(record.deleted_count, 2, "the file and the symlink itself");
    assert_eq!(record.error_count, 1, "{:?}", record.errors);
    let error = record.errors[0]["error"].as_str().unwrap().to_owned();
    assert!(error.contains("symbolic link"), "{error}");
}

/// A purge renames a job's folder aside before it removes it, so that a
/// retried run of the job quarantines into a new folder. A purge that
/// stopped after the rename leaves `<job id>.purging`: the next one removes
/// it once its job has ended before the cutoff, and not while the job runs
/// again, whose new folder stays too.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_folder_an_interrupted_purge_set_aside_goes_only_once_its_job_has_ended(pool: PgPool) {
    let store = Store::new();
    let (ended, again) = (Uuid::new_v4(), Uuid::new_v4());
    store.write(&format!(".janitor-trash/{ended}.purging/photos/a/x.jpg"), 3);
    store.write(&format!(".janitor-trash/{again}.purging/photos/a/y.jpg"), 4);
    store.write(&format!(".janitor-trash/{again}/photos/a/z.jpg"), 5);
    for (job, status, finished) in [(ended, "completed", Some(2)), (again, "running", None)] {
        sqlx::query(
            "INSERT INTO job_results (job_id, operation, status, finished_at)
             VALUES ($1, 'cleanup_orphaned_files', $2, now() - make_interval(hours => $3))",
        )
        .bind(job)
        .bind(status)
        .bind(finished)
        .execute(&pool)
        .await
        .unwrap();
    }

    let record = run(&engine(&pool, &store, 10), &purge()).await;
    assert_eq!((record.deleted_count, record.deleted_bytes, record.error_count), (1, 3, 0), "{:?}", record.errors);
    assert!(!store.exists(&format!(".janitor-trash/{ended}.purging")), "the ended job's folder is gone");
    assert!(store.exists(&format!(".janitor-trash/{again}.purging/photos/a/y.jpg")), "kept while its job runs");
    assert!(store.exists(&format!(".janitor-trash/{again}/photos/a/z.jpg")));
}
