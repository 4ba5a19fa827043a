//! One normalisation of stored paths for everything: a file that a row
//! refers to, under any spelling of its path, is never unlinked by a row
//! operation for another row, and never an orphan; a path that cannot be
//! read without guessing stops the sweep.

use janitor_workers::{CleanupJob, Engine, EngineSettings};
use sqlx::PgPool;

use crate::harness::{run, spec};
use crate::support::{image_exists, insert_image, Image, Store};

/// The application's table without the unique constraint on `storage_path`
/// (janitor's migrations never add one to an existing table).
async fn without_unique_paths(pool: &PgPool) {
    sqlx::query("ALTER TABLE images DROP CONSTRAINT images_storage_path_key").execute(pool).await.unwrap();
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_file_another_remaining_row_refers_to_is_kept(pool: PgPool) {
    without_unique_paths(&pool).await;
    let store = Store::new();
    let expired = insert_image(&pool, Some(&store), &Image::expired("photos/shared.jpg", 4)).await;
    let permanent = insert_image(&pool, None, &Image::permanent("photos/shared.jpg", 4)).await;
    // Another spelling of the same file, which row operations refuse to act
    // on but which still refers to it.
    let spelled = insert_image(&pool, Some(&store), &Image::expired("photos/spelled.jpg", 4)).await;
    insert_image(&pool, None, &Image::permanent("/photos/spelled.jpg", 4)).await;
    let nfd = insert_image(&pool, Some(&store), &Image::expired("photos/caf\u{e9}.jpg", 4)).await;
    insert_image(&pool, None, &Image::permanent("photos/cafe\u{301}.jpg", 4)).await;
    // Two expired rows of one file, both going: the file goes too.
    let pair = [
        insert_image(&pool, Some(&store), &Image::expired("photos/pair.jpg", 4)).await,
        insert_image(&pool, None, &Image::expired("photos/pair.jpg", 4)).await,
    ];
    let engine = Engine::new(pool.clone(), store.root(), EngineSettings::default());
    let record = run(&engine, &spec(CleanupJob::Expired)).await;

    assert_eq!((record.deleted_count, record.skipped_count), (2, 3), "{:?}", record.result);
    for (id, path) in [(expired, "photos/shared.jpg"), (spelled, "photos/spelled.jpg"), (nfd, "photos/caf\u{e9}.jpg")] {
        assert!(image_exists(&pool, id).await, "the row of {path} was skipped");
        assert!(store.exists(path), "{path} is still referenced");
    }
    assert!(image_exists(&pool, permanent).await);
    assert!(!store.exists("photos/pair.jpg"), "no remaining row refers to the pair's file");
    for id in pair {
        assert!(!image_exists(&pool, id).await);
    }
}

/// The orphan sweep reads rows the way row operations find files: a file
/// that any row refers to, under any spelling of its path, is never an
/// orphan.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_file_a_row_refers_to_under_another_spelling_is_not_an_orphan(pool: PgPool) {
    let store = Store::new();
    let spellings = [
        ("photos/lead.jpg", "/photos/lead.jpg"),
        ("photos/dot.jpg", "./photos/dot.jpg"),
        ("photos/a/double.jpg", "photos//a/double.jpg"),
        ("photos/a/trail.jpg", "photos/a/trail.jpg/"),
        ("photos/caf\u{e9}.jpg", "photos/cafe\u{301}.jpg"),
        ("photos/cafe\u{301}-nfd.jpg", "photos/caf\u{e9}-nfd.jpg"),
    ];
    for (file, row) in spellings {
        store.write(file, 1);
        insert_image(&pool, None, &Image::permanent(row, 1)).await;
    }
    store.write("photos/orphan.jpg", 1);
    let job = spec(CleanupJob::Orphaned { min_age_secs: 0 });
    let record = run(&crate::harness::engine(&pool, &store, 2), &job).await;

    assert_eq!(record.status, "completed", "{:?}", record.last_error);
    assert_eq!(record.deleted_count, 1, "only the orphan: {:?}", record.result);
    for (file, row) in spellings {
        assert!(store.exists(file), "{file} is referenced as {row:?}");
    }
    assert!(!store.exists("photos/orphan.jpg"));
}

/// A stored path that can only be read by guessing refuses the sweep, and
/// says how many there are and shows one.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_path_that_cannot_be_normalised_refuses_the_sweep(pool: PgPool) {
    let store = Store::new();
    store.write("photos/a.jpg", 1);
    for unsafe_path in ["/srv/storage/photos/a.jpg", "photos/../photos/a.jpg", "photos\\a.jpg"] {
        sqlx::query("DELETE FROM images").execute(&pool).await.unwrap();
        insert_image(&pool, None, &Image::permanent(unsafe_path, 1)).await;
        insert_image(&pool, None, &Image::permanent("templates/fine.png", 1)).await;
        let job = spec(CleanupJob::Orphaned { min_age_secs: 0 });
        let record = run(&crate::harness::engine(&pool, &store, 10), &job).await;
        assert_eq!(record.status, "failed", "{unsafe_path}");
        let reason = record.last_error.unwrap();
        assert!(reason.contains("1 rows have a storage_path that cannot be normalised safely"), "{reason}");
        assert!(reason.contains(&format!("{unsafe_path:?}")), "the example is shown: {reason}");
        assert!(store.exists("photos/a.jpg"));
    }
}

/// Without its index on stored paths the sweep would read the whole table
/// for every batch: it refuses and says how to create it.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_missing_path_index_refuses_the_sweep(pool: PgPool) {
    let store = Store::new();
    store.write("photos/orphan.jpg", 1);
    sqlx::query("DROP INDEX janitor_images_storage_path").execute(&pool).await.unwrap();
    let job = spec(CleanupJob::Orphaned { min_age_secs: 0 });
    let record = run(&crate::harness::engine(&pool, &store, 10), &job).await;
    assert_eq!(record.status, "failed");
    let reason = record.last_error.unwrap();
    assert!(reason.contains("janitor migrate"), "{reason}");
    assert!(reason.contains("CREATE INDEX CONCURRENTLY janitor_images_storage_path"), "{reason}");
    assert!(store.exists("photos/orphan.jpg"));
}

/// Row operations take a plain ASCII path that parses as its own key
/// (`RelativePath::ascii_key`) without asking Postgres: check that against
/// `janitor_path_key` on every path of up to three components built from
/// tricky names, ASCII controls included (not NUL, which `text` cannot hold).
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_parsed_ascii_path_is_its_own_key(pool: PgPool) {
    use janitor_workers::storage::RelativePath;
    let mut names: Vec<String> =
        ["photos", "results", "photosx", "", ".", "..", "...", ".a", "a.", "a b", "a\\b", "~", "-x", "%2e"]
            .map(str::to_owned)
            .to_vec();
    names.extend((1u8..0x20).chain([0x7f]).map(|c| format!("a{}b", c as char)));
    let mut paths = Vec::new();
    for first in ["photos", "templates", "preprocessed", "results", "photosx", "", ".", "/photos"] {
        for second in &names {
            paths.push(format!("{first}/{second}"));
            for third in ["x.jpg", "", ".", ".."] {
                paths.push(format!("{first}/{second}/{third}"));
            }
        }
    }
    let parsed: Vec<&str> = paths.iter().filter_map(|raw| RelativePath::ascii_key(raw)).collect();
    assert!(parsed.len() > 50 && parsed.len() < paths.len() / 2, "{} of {}", parsed.len(), paths.len());
    let differ: Vec<(String, Option<String>)> = sqlx::query_as(
        "SELECT p, janitor_path_key(p) FROM unnest($1::text[]) AS p WHERE janitor_path_key(p) IS DISTINCT FROM p",
    )
    .bind(&parsed)
    .fetch_all(&pool)
    .await
    .unwrap();
    assert!(differ.is_empty(), "{differ:?}");
    // And the check itself can fail: Postgres does rewrite some of the
    // paths that do not parse.
    let rewritten: i64 =
        sqlx::query_scalar("SELECT count(*) FROM unnest($1::text[]) AS p WHERE janitor_path_key(p) IS DISTINCT FROM p")
            .bind(&paths)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert!(rewritten > 0);
}
