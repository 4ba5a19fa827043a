//! `janitor demo`: a sample store in its own database and folder, a dry run
//! and a real run that show what janitor does, and only a demo folder is
//! ever emptied.

use sqlx::migrate::MigrateDatabase as _;
use sqlx::{Connection as _, PgConnection};

async fn demo(dir: &std::path::Path, database: &str) -> std::process::Output {
    let server = std::env::var("DATABASE_URL").expect("DATABASE_URL is set for the tests");
    tokio::process::Command::new(env!("CARGO_BIN_EXE_janitor"))
        .env("DATABASE_URL", server)
        .env("RUST_LOG", "warn")
        .args(["demo", "--dir"])
        .arg(dir)
        .args(["--database", database])
        .output()
        .await
        .expect("janitor starts")
}

fn files_under(dir: &std::path::Path) -> usize {
    walkdir::WalkDir::new(dir).into_iter().filter_map(Result::ok).filter(|e| e.file_type().is_file()).count()
}

#[tokio::test]
async fn the_demo_shows_a_dry_run_and_a_real_run_on_its_own_store() {
    let database = format!("janitor_demo_{}", uuid::Uuid::new_v4().simple());
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("demo");
    let output = demo(&dir, &database).await;
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert_eq!(output.status.code(), Some(0), "{stdout}\n{stderr}");
    // 400 images: 312 expired and free, 8 expired and in use, 24 old results, 20 orphans.
    assert!(stdout.contains("would delete: 356"), "the dry run: {stdout}");
    assert!(stdout.contains("deleted: 356"), "the real run: {stdout}");
    assert!(stdout.contains("skipped (in use): 8"), "{stdout}");

    let mut url = url::Url::parse(&std::env::var("DATABASE_URL").unwrap()).unwrap();
    url.set_path(&format!("/{database}"));
    let mut conn = PgConnection::connect(url.as_str()).await.unwrap();
    let (images, tasks): (i64, i64) =
        sqlx::query_as("SELECT (SELECT count(*) FROM images), (SELECT count(*) FROM face_swap_tasks)")
            .fetch_one(&mut conn)
            .await
            .unwrap();
    assert_eq!((images, tasks), (64, 32), "in use, sessions and templates stay; every task row stays");
    conn.close().await.unwrap();
    assert_eq!(files_under(&dir.join(".janitor-trash")), 20, "the orphans are in quarantine");
    let kept =
        ["photos", "templates", "preprocessed", "results"].iter().map(|c| files_under(&dir.join(c))).sum::<usize>();
    assert_eq!(kept, 64, "one file per remaining image");

    // A second demo starts over; a folder that is not a demo's is refused.
    assert_eq!(demo(&dir, &database).await.status.code(), Some(0));
    let other = parent.path().join("not-a-demo");
    std::fs::create_dir(&other).unwrap();
    std::fs::write(other.join("precious.jpg"), b"x").unwrap();
    let refused = demo(&other, &database).await;
    assert_eq!(refused.status.code(), Some(2), "{}", String::from_utf8_lossy(&refused.stderr));
    assert!(other.join("precious.jpg").exists(), "nothing of a folder that is not a demo's is touched");
    sqlx::Postgres::force_drop_database(url.as_str()).await.unwrap();
}
