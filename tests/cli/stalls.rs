//! A run that stalls while it holds, or is about to act on, a batch: paced
//! to one deletion a second and stopped (SIGSTOP) for longer than Postgres's
//! `idle_in_transaction_session_timeout`. Postgres ends any session idle in
//! a transaction by then, and its row locks vanish; the application starts
//! tasks on every image left. No file of those images may be unlinked.

use std::process::Stdio;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use uuid::Uuid;

use crate::binary::Janitor;
use crate::support::{self, seed_expired, Store};

/// The timeout the review's Postgres had was 60 s (janitor's default);
/// lowered for the test. Janitor sends its own timeout as a startup option
/// (`JANITOR_IDLE_TRANSACTION_TIMEOUT`), which overrides any `ALTER DATABASE
/// … SET`, so the stalled process is given it that way. The test's own
/// sessions never sit in a transaction and need none.
const IDLE_TIMEOUT: Duration = Duration::from_secs(1);

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_stalled_paced_run_never_unlinks_a_file_after_its_locks_are_gone(pool: PgPool) {
    record_idle_timeouts(&pool).await;
    let store = Store::new();
    seed_expired(&pool, &store, 6, 1).await;
    let job_id = Uuid::new_v4().to_string();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_janitor"))
        .args(["run", "expired", "--job-id", &job_id, "--json"])
        .env("DATABASE_URL", support::database_url(&pool))
        .env("JANITOR_STORAGE_ROOT", store.root())
        .env("JANITOR_BATCH_SIZE", "2")
        .env("JANITOR_MAX_DELETES_PER_SEC", "1")
        .env("JANITOR_IDLE_TRANSACTION_TIMEOUT", format!("{}ms", IDLE_TIMEOUT.as_millis()))
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("janitor starts");
    let pid = child.id().unwrap().to_string();
    wait_until_deleted(&pool, &job_id).await;
    let timeouts: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT timeout FROM stall_timeouts").fetch_all(&pool).await.unwrap();
    assert_eq!(timeouts, ["1s"], "janitor's sessions must run with the lowered idle-in-transaction timeout");

    signal("STOP", &pid).await;
    let stopped = Instant::now();
    // The application starts a pending task on every image that still has a
    // row. An insert on an image janitor holds waits for its lock, which goes
    // when Postgres ends janitor's idle session.
    let images: Vec<(i64, String)> =
        sqlx::query_as("SELECT id, storage_path FROM images ORDER BY id").fetch_all(&pool).await.unwrap();
    let mut in_use = Vec::new();
    for (id, path) in images {
        let insert = sqlx::query("INSERT INTO face_swap_tasks (husband_photo_id, status) VALUES ($1, 'pending')")
            .bind(id)
            .execute(&pool)
            .await;
        match insert {
            Ok(_) => in_use.push(path),
            Err(sqlx::Error::Database(err)) if err.code().as_deref() == Some("23503") => {}
            Err(err) => panic!("unexpected insert error: {err}"),
        }
    }
    // The stall is the scenario: janitor stays stopped past the timeout.
    let stall = IDLE_TIMEOUT * 2;
    tokio::time::sleep(stall.saturating_sub(stopped.elapsed())).await;
    signal("CONT", &pid).await;

    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await.expect("janitor ends").unwrap();
    if !status.success() {
        // The stop landed inside a transaction, which Postgres ended: the run
        // stops with an error and resumes from its checkpoint.
        Janitor::new(&pool, &store).run(&["run", "expired", "--job-id", &job_id]).await.expect_code(0);
    }
    assert!(!in_use.is_empty(), "the application must have started tasks while janitor was stopped");
    for path in &in_use {
        let row: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM images WHERE storage_path = $1)")
            .bind(path)
            .fetch_one(&pool)
            .await
            .unwrap();
        assert!(row, "the row of an image a pending task uses is gone: {path}");
        assert!(store.exists(path), "the file of an image a pending task uses is gone: {path}");
    }
}

/// Records the `idle_in_transaction_session_timeout` in force in every
/// session that saves a job's progress (janitor's), so the test can prove
/// the lowered timeout reached them.
async fn record_idle_timeouts(pool: &PgPool) {
    for statement in [
        "CREATE TABLE stall_timeouts (timeout text)",
        "CREATE FUNCTION stall_timeout() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN
             INSERT INTO stall_timeouts VALUES (current_setting('idle_in_transaction_session_timeout'));
             RETURN NULL;
         END $$",
        "CREATE TRIGGER stall_timeout AFTER UPDATE ON job_results FOR EACH ROW EXECUTE FUNCTION stall_timeout()",
    ] {
        sqlx::query(statement).execute(pool).await.unwrap_or_else(|err| panic!("{statement}: {err}"));
    }
}

async fn wait_until_deleted(pool: &PgPool, job_id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let deleted: Option<i64> = sqlx::query_scalar("SELECT deleted_count FROM job_results WHERE job_id = $1::uuid")
            .bind(job_id)
            .fetch_optional(pool)
            .await
            .unwrap();
        if deleted.unwrap_or(0) >= 1 {
            return;
        }
        assert!(Instant::now() < deadline, "janitor deleted nothing within 30 s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn signal(name: &str, pid: &str) {
    let status = tokio::process::Command::new("kill").arg(format!("-{name}")).arg(pid).status().await.unwrap();
    assert!(status.success(), "kill -{name} {pid}");
}
