//! Guards against a misconfigured deployment: the orphan ratio cap, one sweep
//! per storage root, quarantine and restore, the trash purge, and the
//! per-run limit.

use janitor_workers::{CleanupJob, DaysOld, Engine, EngineSettings, JobSpec, SessionId};
use sqlx::PgPool;

use crate::harness::{run, spec};
use crate::support::{count_images, insert_image, insert_task, seed_expired, Image, Store, TaskImages};

/// An engine with `settings`, that sweeps files written a moment ago.
fn engine(pool: &PgPool, store: &Store, settings: EngineSettings) -> Engine {
    Engine::new(pool.clone(), store.root(), EngineSettings { min_grace: std::time::Duration::ZERO, ..settings })
}

fn orphans() -> JobSpec {
    spec(CleanupJob::Orphaned { min_age_secs: 0 })
}

/// A store where `known` files have rows and `orphans` do not.
async fn store_with(pool: &PgPool, known: usize, orphans: usize) -> Store {
    let store = Store::new();
    for i in 0..known {
        insert_image(pool, Some(&store), &Image::permanent(&format!("templates/k{i}.png"), 1)).await;
    }
    for i in 0..orphans {
        store.write(&format!("photos/o/{i}.jpg"), 1);
    }
    store
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn too_many_orphans_means_nothing_is_deleted(pool: PgPool) {
    let store = store_with(&pool, 10, 15).await;
    let record = run(&engine(&pool, &store, EngineSettings::default()), &orphans()).await;
    assert_eq!(record.status, "failed");
    let reason = record.last_error.unwrap();
    assert!(reason.starts_with("refusing: 60% of 25 files look orphaned"), "{reason}");
    assert!(reason.contains("--max-orphan-ratio"), "{reason}");
    assert_eq!(record.deleted_count, 0);
    assert!((0..15).all(|i| store.exists(&format!("photos/o/{i}.jpg"))), "nothing was deleted");
}

/// Only a walk that covered the whole store decides. A sweep stopped during
/// its walk (a deploy, SIGTERM) or before it (a signal at once) and resumed,
/// maybe elsewhere, still refuses a store where half the files look
/// orphaned, as a plain run does.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_interrupted_walk_never_lets_the_resumed_sweep_past_the_guard(pool: PgPool) {
    let store = store_with(&pool, 20, 20).await;
    let engine = engine(&pool, &store, EngineSettings { batch_size: 5, ..EngineSettings::default() });
    let job = orphans();
    let during = uuid::Uuid::new_v4();
    assert!(matches!(
        crate::harness::run_until(&engine, during, &job, 2).await,
        janitor_workers::RunOutcome::Interrupted
    ));
    let before = uuid::Uuid::new_v4();
    let control = janitor_workers::RunControl::default();
    control.cancel.cancel();
    assert!(matches!(engine.run(before, &job, &control).await.unwrap(), janitor_workers::RunOutcome::Interrupted));

    for job_id in [during, before] {
        let record = crate::harness::run_as(&engine, job_id, &job).await;
        assert_eq!(record.status, "failed", "{job_id}");
        let reason = record.last_error.unwrap();
        assert!(reason.starts_with("refusing: 50% of 40 files look orphaned"), "{reason}");
        assert_eq!(record.deleted_count, 0);
    }
    assert!((0..20).all(|i| store.exists(&format!("photos/o/{i}.jpg"))), "nothing was deleted or moved");
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_empty_database_with_a_full_store_is_refused(pool: PgPool) {
    let store = store_with(&pool, 0, 5).await;
    let record = run(&engine(&pool, &store, EngineSettings::default()), &orphans()).await;
    assert_eq!(record.status, "failed");
    assert!(record.last_error.unwrap().starts_with("refusing: 100% of 5 files"));
    assert!(store.exists("photos/o/0.jpg"));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_share_under_the_cap_is_swept_into_quarantine_and_restored(pool: PgPool) {
    let store = store_with(&pool, 10, 2).await;
    let engine = engine(&pool, &store, EngineSettings::default());
    let record = run(&engine, &orphans()).await;
    assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 2));
    assert!(!store.exists("photos/o/0.jpg"));
    let trashed = format!(".janitor-trash/{}/photos/o/0.jpg", record.job_id);
    assert!(store.exists(&trashed), "moved into the job's trash, not unlinked");

    // The trash is never swept as storage.
    let again = run(&engine, &orphans()).await;
    assert_eq!(again.deleted_count, 0);
    assert!(store.exists(&trashed));

    let storage = janitor_workers::storage::Storage::open(store.root()).unwrap();
    let restored = janitor_workers::storage::trash::restore(&storage, record.job_id).unwrap();
    assert_eq!(restored.restored, 2);
    assert!(store.exists("photos/o/0.jpg") && store.exists("photos/o/1.jpg"));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn quarantine_can_be_turned_off(pool: PgPool) {
    let store = store_with(&pool, 10, 1).await;
    let settings = EngineSettings { quarantine: false, ..EngineSettings::default() };
    let record = run(&engine(&pool, &store, settings), &orphans()).await;
    assert_eq!(record.deleted_count, 1);
    assert!(!store.exists(&format!(".janitor-trash/{}", record.job_id)));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn the_purge_empties_only_old_trash(pool: PgPool) {
    let store = store_with(&pool, 10, 2).await;
    let engine = engine(&pool, &store, EngineSettings::default());
    let sweep = run(&engine, &orphans()).await;
    let purge = |retention_secs| spec(CleanupJob::PurgeTrash { retention_secs });

    let young = run(&engine, &purge(3600)).await;
    assert_eq!(young.deleted_count, 0, "a sweep that just ended is kept");
    assert!(store.exists(&format!(".janitor-trash/{}", sweep.job_id)));

    sqlx::query("UPDATE job_results SET finished_at = now() - interval '2 hours' WHERE job_id = $1")
        .bind(sweep.job_id)
        .execute(&pool)
        .await
        .unwrap();
    let record = run(&engine, &purge(3600)).await;
    assert_eq!((record.deleted_count, record.deleted_bytes), (2, 2));
    assert!(!store.exists(&format!(".janitor-trash/{}", sweep.job_id)));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_second_sweep_of_the_same_root_is_skipped(pool: PgPool) {
    let store = store_with(&pool, 10, 1).await;
    // Another sweep holds the root's lock (as `sweep_lock` takes it).
    let root = std::fs::canonicalize(store.root()).unwrap();
    let mut holder = pool.acquire().await.unwrap();
    let key = format!("janitor-orphan-sweep:{}", root.display());
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtextextended($1, 0))")
        .bind(&key)
        .fetch_one(&mut *holder)
        .await
        .unwrap();
    assert!(locked);
    let record = run(&engine(&pool, &store, EngineSettings::default()), &orphans()).await;
    assert_eq!(record.status, "skipped");
    assert!(record.last_error.unwrap().contains("another orphan sweep"));
    assert!(store.exists("photos/o/0.jpg"));

    sqlx::query("SELECT pg_advisory_unlock_all()").execute(&mut *holder).await.unwrap();
    let record = run(&engine(&pool, &store, EngineSettings::default()), &orphans()).await;
    assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 1));
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_limit_bounds_the_deletions_of_one_run(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 35, 1).await;
    let engine = crate::harness::engine(&pool, &store, 10);
    let job = JobSpec { limit: Some(12), ..spec(CleanupJob::Expired) };
    let record = run(&engine, &job).await;
    assert_eq!(record.deleted_count, 12);
    assert_eq!(count_images(&pool).await, 23);
    assert_eq!(record.result.unwrap()["limit"], 12);
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_row_committed_after_the_scan_protects_its_file(pool: PgPool) {
    use janitor_workers::progress::{Census, Cursor, PendingOrphans, Progress};
    use janitor_workers::results::{self, Start};
    let store = store_with(&pool, 10, 2).await;
    let job = orphans();
    let job_id = uuid::Uuid::new_v4();
    // A sweep decided both files were orphans and saved them as pending
    // (past its complete walk), then stopped before moving them.
    let Start::Run(lease, _, now) = results::start(&pool, job_id, &job, "test", None).await.unwrap() else { panic!() };
    let mut progress = Progress::new(now, 1, 10);
    progress.checkpoint.census = Some(Census { files: 12, candidates: 2, bytes: 2 });
    progress.checkpoint.cursor = Cursor::Start;
    let files = vec![("photos/o/0.jpg".to_owned(), 1), ("photos/o/1.jpg".to_owned(), 1)];
    let pending = PendingOrphans { files, cursor: "photos/o/1.jpg".into(), scanned: 12, identities: Vec::new() };
    progress.checkpoint.pending = Some(pending);
    results::save_progress(&mut pool.acquire().await.unwrap(), lease, &progress).await.unwrap();
    // Meanwhile the app committed a row for one of them: the check after the
    // move brings it back.
    sqlx::query("INSERT INTO images (filename, storage_path, category, storage_type) VALUES ('0.jpg', 'photos/o/0.jpg', 'photos', 'permanent')")
        .execute(&pool)
        .await
        .unwrap();

    let record = crate::harness::run_as(&engine(&pool, &store, EngineSettings::default()), job_id, &job).await;
    assert_eq!(record.deleted_count, 1);
    assert!(store.exists("photos/o/0.jpg"), "the file a new row references stays");
    assert!(!store.exists("photos/o/1.jpg"));
}

/// The check before the move and the move are not under one lock: a row
/// the application commits in between finds its file already in the trash.
/// The check after the move brings it back. Here the sweep stopped right
/// after moving the first of its pending files, before that check, and the
/// application committed a row for it meanwhile.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_file_moved_to_the_trash_that_a_row_now_refers_to_goes_back(pool: PgPool) {
    use janitor_workers::progress::{Census, PendingOrphans, Progress};
    use janitor_workers::results::{self, Start};
    let store = store_with(&pool, 10, 2).await;
    let job = orphans();
    let job_id = uuid::Uuid::new_v4();
    let Start::Run(lease, _, now) = results::start(&pool, job_id, &job, "test", None).await.unwrap() else { panic!() };
    let mut progress = Progress::new(now, 1, 10);
    progress.checkpoint.census = Some(Census { files: 12, candidates: 2, bytes: 2 });
    let files = vec![("photos/o/0.jpg".to_owned(), 1), ("photos/o/1.jpg".to_owned(), 1)];
    let pending = PendingOrphans { files, cursor: "photos/o/1.jpg".into(), scanned: 0, identities: Vec::new() };
    progress.checkpoint.pending = Some(pending);
    results::save_progress(&mut pool.acquire().await.unwrap(), lease, &progress).await.unwrap();
    let trashed = format!(".janitor-trash/{job_id}/photos/o/0.jpg");
    std::fs::create_dir_all(store.path(&trashed).parent().unwrap()).unwrap();
    std::fs::rename(store.path("photos/o/0.jpg"), store.path(&trashed)).unwrap();
    insert_image(&pool, None, &Image::permanent("photos/o/0.jpg", 1)).await;

    let record = crate::harness::run_as(&engine(&pool, &store, EngineSettings::default()), job_id, &job).await;
    assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 1), "{:?}", record.errors);
    assert!(store.exists("photos/o/0.jpg"), "the file a row refers to is back in place");
    assert!(!store.exists(&trashed));
    assert!(store.exists(&format!(".janitor-trash/{job_id}/photos/o/1.jpg")), "the orphan stays in the trash");
}

/// The re-stat that judged a file old enough and the move are not under one
/// lock: an upload may take an orphan's path in between, with an old mtime
/// (`cp -p`). The move takes a file only if it is still the one judged
/// (device, inode, mtime), so the new file stays where it is, as an error
/// item, and the other orphan of the batch goes. Here the sweep saved its
/// judged batch and stopped; the file was replaced before the rerun.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_file_that_took_an_orphans_path_after_it_was_judged_stays(pool: PgPool) {
    use std::os::unix::fs::MetadataExt as _;

    use janitor_workers::progress::{Census, PendingOrphans, Progress};
    use janitor_workers::results::{self, Start};
    use janitor_workers::storage::FileIdentity;
    let store = store_with(&pool, 10, 2).await;
    let identity = |path: &str| {
        let meta = std::fs::symlink_metadata(store.path(path)).unwrap();
        FileIdentity { dev: meta.dev(), ino: meta.ino(), mtime_ns: meta.mtime() * 1_000_000_000 + meta.mtime_nsec() }
    };
    let job = orphans();
    let job_id = uuid::Uuid::new_v4();
    let Start::Run(lease, _, now) = results::start(&pool, job_id, &job, "test", None).await.unwrap() else { panic!() };
    let mut progress = Progress::new(now, 1, 10);
    progress.checkpoint.census = Some(Census { files: 12, candidates: 2, bytes: 2 });
    let files = vec![("photos/o/0.jpg".to_owned(), 1), ("photos/o/1.jpg".to_owned(), 1)];
    let identities = vec![identity("photos/o/0.jpg"), identity("photos/o/1.jpg")];
    let pending = PendingOrphans { files, cursor: "photos/o/1.jpg".into(), scanned: 0, identities };
    progress.checkpoint.pending = Some(pending);
    results::save_progress(&mut pool.acquire().await.unwrap(), lease, &progress).await.unwrap();
    // A new upload lands at the first path, as `cp -p` would put it: a new
    // file with the old one's mtime.
    let old_mtime = std::fs::metadata(store.path("photos/o/0.jpg")).unwrap().modified().unwrap();
    let upload = store.path("photos/o/upload.tmp");
    std::fs::write(&upload, b"new upload").unwrap();
    std::fs::File::options().write(true).open(&upload).unwrap().set_modified(old_mtime).unwrap();
    std::fs::rename(&upload, store.path("photos/o/0.jpg")).unwrap();

    let record = crate::harness::run_as(&engine(&pool, &store, EngineSettings::default()), job_id, &job).await;
    assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 1), "{:?}", record.errors);
    assert_eq!(std::fs::read(store.path("photos/o/0.jpg")).unwrap(), b"new upload", "the new file stays in place");
    assert!(!store.exists(&format!(".janitor-trash/{job_id}/photos/o/0.jpg")));
    assert!(store.exists(&format!(".janitor-trash/{job_id}/photos/o/1.jpg")), "the judged orphan goes");
    assert_eq!(record.error_count, 1);
    assert!(record.errors.to_string().contains("another file took its path"), "{:?}", record.errors);
}

/// A grace period under the floor (`min_grace`) is refused by the engine
/// too, whoever enqueued it.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_grace_period_under_the_minimum_is_refused(pool: PgPool) {
    let store = store_with(&pool, 10, 1).await;
    let settings = EngineSettings { min_grace: std::time::Duration::from_secs(600), ..EngineSettings::default() };
    let engine = Engine::new(pool.clone(), store.root(), settings);
    let record = run(&engine, &spec(CleanupJob::Orphaned { min_age_secs: 599 })).await;
    assert_eq!(record.status, "failed");
    let reason = record.last_error.unwrap();
    assert!(reason.contains("a grace period of 9m 59s is shorter than the minimum of 10m"), "{reason}");
    assert!(store.exists("photos/o/0.jpg"));
}

/// A duration no input path accepts, built in code, ends the job as bad
/// input instead of panicking in time arithmetic.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_out_of_range_duration_fails_the_job_as_bad_input(pool: PgPool) {
    let store = store_with(&pool, 1, 1).await;
    let engine = engine(&pool, &store, EngineSettings::default());
    for job in [CleanupJob::Orphaned { min_age_secs: u64::MAX }, CleanupJob::PurgeTrash { retention_secs: 0 }] {
        let record = run(&engine, &spec(job.clone())).await;
        assert_eq!(record.status, "failed", "{job:?}");
        assert!(record.last_error.unwrap().starts_with("bad input: "), "{job:?}");
    }
    assert!(store.exists("photos/o/0.jpg"));
}

/// The name of the foreign key from `face_swap_tasks.<column>` to `images`.
async fn task_key(pool: &PgPool, column: &str) -> String {
    sqlx::query_scalar(
        "SELECT c.conname::text FROM pg_constraint c
         JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = c.conkey[1]
         WHERE c.contype = 'f' AND c.conrelid = 'face_swap_tasks'::regclass AND a.attname = $1",
    )
    .bind(column)
    .fetch_one(pool)
    .await
    .unwrap()
}

/// Row cleanups rely on the foreign keys from the tasks to the images (a
/// task that starts to use an image waits for the batch's row lock only
/// through its key check). On a schema where one is missing, cascades or
/// is switched off, every row operation and its dry run refuse, naming the
/// column, and nothing is deleted; with the key back, the same job runs.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn row_cleanups_refuse_without_the_task_foreign_keys(pool: PgPool) {
    let store = Store::new();
    seed_expired(&pool, &store, 6, 3).await;
    insert_image(&pool, Some(&store), &Image::fresh("photos/s/a.jpg", 2).session("s1")).await;
    let result = insert_image(&pool, Some(&store), &Image::permanent("results/r.jpg", 4)).await;
    let images = TaskImages { result: Some(result), ..TaskImages::default() };
    insert_task(&pool, "completed", images, Some(40)).await;
    let session = || CleanupJob::Session { session_id: SessionId::parse("s1").unwrap() };
    let old_results = || CleanupJob::OldResults { days_old: DaysOld::new(30).unwrap() };
    let engine = crate::harness::engine(&pool, &store, 2);
    let breakages: [(&str, &str, &str); 4] = [
        ("wife_photo_id", "ALTER TABLE face_swap_tasks DROP CONSTRAINT {key}", "dropped"),
        (
            "template_id",
            "ALTER TABLE face_swap_tasks DROP CONSTRAINT {key},
             ADD CONSTRAINT {key} FOREIGN KEY (template_id) REFERENCES images (id) ON DELETE CASCADE",
            "cascading",
        ),
        ("husband_photo_id", "ALTER TABLE face_swap_tasks DISABLE TRIGGER ALL", "switched off"),
        (
            "husband_photo_id",
            "DO $$ DECLARE t record; BEGIN
                 FOR t IN SELECT tgname FROM pg_trigger
                          WHERE tgrelid = 'face_swap_tasks'::regclass
                            AND tgconstraint = (SELECT oid FROM pg_constraint WHERE conname = '{key}') LOOP
                     EXECUTE format('ALTER TABLE face_swap_tasks ENABLE REPLICA TRIGGER %I', t.tgname);
                 END LOOP;
             END $$",
            "replica-only",
        ),
    ];
    for (column, break_it, how) in breakages {
        let key = task_key(&pool, column).await;
        sqlx::raw_sql(&break_it.replace("{key}", &key)).execute(&pool).await.unwrap();
        let jobs = [
            crate::harness::spec(CleanupJob::Expired),
            crate::harness::dry(CleanupJob::Expired),
            crate::harness::spec(session()),
            crate::harness::spec(old_results()),
        ];
        for job in &jobs {
            let record = run(&engine, job).await;
            assert_eq!(record.status, "failed", "{how} key on {column}: {job:?}");
            let reason = record.last_error.unwrap_or_default();
            assert!(
                reason.contains(&format!("face_swap_tasks.{column} has no enabled foreign key to images")),
                "{how} key on {column}: {reason}"
            );
            assert_eq!(record.deleted_count, 0, "{how} key on {column}: {job:?}");
        }
        assert_eq!(count_images(&pool).await, 8, "{how} key on {column}: no row was deleted");
        assert!(store.exists("photos/s/a.jpg") && store.exists("results/r.jpg"), "{how} key on {column}");
        // Put the key back as the application's schema had it.
        let restore = match how {
            "switched off" | "replica-only" => "ALTER TABLE face_swap_tasks ENABLE TRIGGER ALL".to_owned(),
            _ => format!(
                "ALTER TABLE face_swap_tasks DROP CONSTRAINT IF EXISTS {key},
                 ADD CONSTRAINT {key} FOREIGN KEY ({column}) REFERENCES images (id) ON DELETE SET NULL"
            ),
        };
        sqlx::raw_sql(&restore).execute(&pool).await.unwrap();
    }
    let record = run(&engine, &crate::harness::spec(CleanupJob::Expired)).await;
    assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 6), "{:?}", record.last_error);
    for job in [session(), old_results()] {
        let record = run(&engine, &crate::harness::spec(job)).await;
        assert_eq!((record.status.as_str(), record.deleted_count), ("completed", 1), "{:?}", record.last_error);
    }
    assert!(!store.exists("photos/s/a.jpg") && !store.exists("results/r.jpg"));
}
