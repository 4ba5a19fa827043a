//! Least privilege: a real `janitor worker` (and `janitor enqueue --wait`)
//! under a login role that holds only the grants below completes an
//! expired job and a session job, including a delete that fires the
//! tasks' `ON DELETE SET NULL`; `janitor prune` under it removes every kind
//! of old record.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;

use crate::fixtures::{seed_expired, stored_files};
use crate::harness::shared_redis_url;
use crate::process::{cleanup_keys, prefix, Janitor};
use crate::support::{count_images, database_url, insert_image, insert_task, Image, Store, TaskImages};

/// What the runtime role needs, `{db}` and `{role}` to be replaced. Not
/// granted on purpose: UPDATE of any task column but `id` (the foreign keys'
/// `ON DELETE SET NULL` runs with the table owner's rights), any sequence
/// but `audit_log_id_seq` (`job_results` has no serial), CREATE anywhere
/// (migrations run as the owner).
pub const GRANTS: &str = r#"
GRANT CONNECT ON DATABASE {db} TO {role};
GRANT USAGE ON SCHEMA public TO {role};
-- worker: the cleanup itself (FOR UPDATE row locks need UPDATE on one column)
GRANT SELECT, DELETE, UPDATE (id) ON images TO {role};
-- worker: FOR SHARE locks on the tasks that use a batch's images, same reason
GRANT SELECT, UPDATE (id) ON face_swap_tasks TO {role};
-- worker: the files of a batch's deleted rows, until they are unlinked
GRANT SELECT, INSERT, DELETE ON janitor_unlink_intents TO {role};
-- worker: the orphan sweep's spill
GRANT SELECT, INSERT, DELETE ON janitor_orphan_candidates TO {role};
-- worker, enqueue, scheduler, serve: job rows (DELETE: a producer undoes its row if the XADD fails)
GRANT SELECT, INSERT, UPDATE, DELETE ON job_results TO {role};
-- scheduler (DELETE: the prune of old ticks)
GRANT SELECT, INSERT, DELETE ON schedule_ticks TO {role};
-- serve writes the audit log, janitor audit reads it (DELETE: the prune of old rows)
GRANT SELECT, INSERT, DELETE ON audit_log TO {role};
GRANT USAGE ON SEQUENCE audit_log_id_seq TO {role};
-- serve: /metrics and the console's chart (the counters are written by triggers that run as the owner)
GRANT SELECT ON job_counters, schedule_last_success, job_activity TO {role};
-- serve: console logins (DELETE: logouts, and the prune of expired sessions)
GRANT SELECT, INSERT, DELETE ON console_sessions TO {role};
"#;

/// Creates the role with [`GRANTS`]; drops it (with its grants) when dropped,
/// also when the test fails.
struct Role {
    name: String,
    /// The superuser URL of the test database, for dropping the role.
    admin_url: String,
}

impl Role {
    async fn create(pool: &PgPool) -> Self {
        let name = format!("janitor_worker_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let db: String = sqlx::query_scalar("SELECT current_database()").fetch_one(pool).await.unwrap();
        let role = Self { name, admin_url: database_url(pool) };
        sqlx::query(&format!("CREATE ROLE {} LOGIN", role.name)).execute(pool).await.unwrap();
        // Only what is granted: no CONNECT through PUBLIC either.
        sqlx::query(&format!(r#"REVOKE ALL ON DATABASE "{db}" FROM PUBLIC"#)).execute(pool).await.unwrap();
        let grants = GRANTS.replace("{db}", &format!("\"{db}\"")).replace("{role}", &role.name);
        for statement in grants.split(';').map(str::trim).filter(|s| !s.is_empty()) {
            let statement: String =
                statement.lines().filter(|l| !l.trim_start().starts_with("--")).collect::<Vec<_>>().join("\n");
            sqlx::query(&statement).execute(pool).await.unwrap_or_else(|e| panic!("{statement}: {e}"));
        }
        role
    }

    fn url(&self) -> String {
        let mut url = url::Url::parse(&self.admin_url).unwrap();
        url.set_username(&self.name).unwrap();
        url.to_string()
    }
}

impl Drop for Role {
    fn drop(&mut self) {
        let sql = format!("DROP OWNED BY {0}; DROP ROLE {0};", self.name);
        let status = std::process::Command::new("psql")
            .args([self.admin_url.as_str(), "-q", "-v", "ON_ERROR_STOP=1", "-c", &sql])
            .stdout(std::process::Stdio::null())
            .status();
        if !status.is_ok_and(|s| s.success()) {
            eprintln!("could not drop role {}; drop it by hand", self.name);
        }
    }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_worker_with_only_the_documented_grants_completes_its_jobs(pool: PgPool) {
    let role = Role::create(&pool).await;
    let store = Store::new();
    seed_expired(&pool, &store, "grants", 120, 4).await;
    // A session image used by a finished task: deleting it fires SET NULL.
    let used =
        insert_image(&pool, Some(&store), &Image::permanent("photos/grants/s/used.jpg", 4).session("grant-s")).await;
    insert_image(&pool, Some(&store), &Image::fresh("photos/grants/s/other.jpg", 4).session("grant-s")).await;
    let task =
        insert_task(&pool, "completed", TaskImages { husband: Some(used), ..TaskImages::default() }, Some(1)).await;

    let prefix = prefix();
    let janitor = Janitor::new(&role.url(), &shared_redis_url(), &prefix, store.root())
        .with_all(&[("JANITOR_BATCH_SIZE", "25"), ("JANITOR_DB_CONNECTIONS", "4")]);
    // The role really is limited.
    let (code, _, stderr) = janitor.run(&["migrate"], Duration::from_secs(30)).await;
    assert_ne!(code, 0, "the role cannot run migrations");
    assert!(stderr.contains("permission denied"), "{stderr}");

    let mut worker = janitor.spawn(&["worker", "--lease", "3s"]);
    for (args, deleted) in [(&["expired"][..], 120), (&["session", "grant-s"][..], 2)] {
        let (code, stdout, stderr) = janitor
            .run(&[&["enqueue"], args, &["--wait", "--json", "--timeout", "60s"]].concat(), Duration::from_secs(90))
            .await;
        assert_eq!(code, 0, "{args:?}: {stderr}\nworker:\n{}", worker.stderr());
        let result: Value = serde_json::from_str(&stdout).unwrap();
        assert_eq!(result["status"], "completed", "{result}");
        assert_eq!(result["deleted_count"], deleted, "{result}");
        assert_eq!(result["error_count"], 0, "{result}");
    }
    assert_eq!(count_images(&pool).await, 0);
    assert_eq!(stored_files(&store), 0);
    let husband: Option<i64> = sqlx::query_scalar("SELECT husband_photo_id FROM face_swap_tasks WHERE id = $1")
        .bind(task)
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(husband, None, "ON DELETE SET NULL ran under the role");
    assert!(!worker.stderr().contains("permission denied"), "{}", worker.stderr());

    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0), "{}", worker.stderr());
    cleanup_keys(&shared_redis_url(), &prefix).await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_prune_with_only_the_documented_grants_removes_every_kind(pool: PgPool) {
    let role = Role::create(&pool).await;
    let store = Store::new();
    let old = "now() - interval '400 days'";
    let finished = uuid::Uuid::new_v4();
    sqlx::raw_sql(&format!(
        "INSERT INTO job_results (job_id, operation, status, finished_at) VALUES
             (gen_random_uuid(), 'cleanup_session', 'completed', {old}),
             (gen_random_uuid(), 'cleanup_all', 'skipped', {old}),
             ('{finished}', 'cleanup_orphaned_files', 'failed', {old});
         INSERT INTO audit_log (at, method, path, status, outcome) VALUES ({old}, 'POST', '/x', 202, 'accepted');
         INSERT INTO schedule_ticks (queue, schedule, scheduled_at, job_id, outcome) VALUES
             ('q', 's', {old}, gen_random_uuid(), 'skipped'), ('q', 's', now(), gen_random_uuid(), 'enqueued');
         INSERT INTO janitor_orphan_candidates (job_id, path, size) VALUES ('{finished}', 'photos/x.jpg', 1);
         INSERT INTO janitor_unlink_intents (job_id, batch, image_ids, paths) VALUES ('{finished}', 0, '{{1}}', '{{photos/y.jpg}}');
         INSERT INTO console_sessions (id_hash, token_name, token_hash, read_only, csrf, expires_at)
             VALUES ('\\x01', 'ops', '\\x02', false, 'c', now() - interval '1 minute');"
    ))
    .execute(&pool)
    .await
    .unwrap();

    let prefix = prefix();
    let janitor = Janitor::new(&role.url(), &shared_redis_url(), &prefix, store.root());
    let (code, stdout, stderr) = janitor.run(&["prune", "--json"], Duration::from_secs(60)).await;
    assert_eq!(code, 0, "{stderr}");
    let result: Value = serde_json::from_str(&stdout).unwrap();
    let kinds = [
        "job_results_session",
        "job_results_completed",
        "job_results_failed",
        "audit_log",
        "schedule_ticks",
        "console_sessions",
    ];
    for kind in kinds {
        assert_eq!(result["pruned"][kind], 1, "{kind}: {result}");
    }
    assert_eq!(
        (result["pruned"]["orphan_candidates"].as_i64(), result["pruned"]["unlink_intents"].as_i64()),
        (Some(1), Some(1))
    );
    cleanup_keys(&shared_redis_url(), &prefix).await;
}
