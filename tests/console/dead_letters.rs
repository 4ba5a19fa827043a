//! A dead letter in a real browser: a job that fails every delivery is
//! dead-lettered by a real worker; the operator finds it on the dead
//! letters page with its reason, fixes the cause, presses Retry, and the
//! job runs again to completion, from the same id.

use std::time::Duration;

use janitor_workers::layout::Lane;
use redis::streams::StreamRangeReply;
use sqlx::PgPool;
use uuid::Uuid;

use crate::browser::Browser;
use crate::console::{Console, OPS};
use crate::harness::{wait_until, Env};
use crate::support::seed_expired;

/// Makes every deletion of an image fail, as a broken database would.
const POISON: &str = "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS
    $$ BEGIN RAISE EXCEPTION 'poison: images cannot be deleted'; END $$;
    CREATE TRIGGER poison BEFORE DELETE ON images FOR EACH ROW EXECUTE FUNCTION poison();";

/// The ids of the bulk lane's dead letters that carry `job`.
async fn dead_letters_of(env: &Env, job: Uuid) -> Vec<String> {
    let mut redis = env.redis().await;
    let reply: StreamRangeReply = redis::cmd("XRANGE")
        .arg(env.layout().dead(Lane::Bulk))
        .arg("-")
        .arg("+")
        .query_async(&mut redis)
        .await
        .unwrap();
    let carries = |entry: &redis::streams::StreamId| {
        entry.get::<String>("job").is_some_and(|payload| payload.contains(&job.to_string()))
    };
    reply.ids.iter().filter(|entry| carries(entry)).map(|entry| entry.id.clone()).collect()
}

/// The job's (status, deleted_count, attempts).
async fn state(env: &Env, job: Uuid) -> (String, i64, i32) {
    let (status, deleted, attempts, ..) = env.job(job).await.expect("the job has a row");
    (status, deleted, attempts)
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_operator_retries_a_dead_letter_and_the_job_runs_again(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired(&env.pool, &env.store, 5, 1).await;
    sqlx::raw_sql(POISON).execute(&env.pool).await.unwrap();
    let settings = [
        ("JANITOR_MAX_ATTEMPTS", "2"),
        ("JANITOR_RETRY_BASE", "100ms"),
        ("JANITOR_LEASE", "2s"),
        ("JANITOR_RECONCILE_INTERVAL", "500ms"),
    ];
    let _worker = env.worker(&[], &settings);
    let job = env.enqueue(&["expired"]).await;
    wait_until("the job is dead-lettered", Duration::from_secs(60), || async {
        state(&env, job).await.0 == "failed" && !dead_letters_of(&env, job).await.is_empty()
    })
    .await;
    let entry = dead_letters_of(&env, job).await.remove(0);

    let console = Console::start(&env).await;
    let browser = Browser::start().await;
    console.log_in(&browser, OPS.1).await;
    browser.client.goto(&console.url("/dead")).await.unwrap();
    let row = format!("table#dead tr[data-entry-id='{entry}']");
    assert!(browser.text(&format!("{row} td.reason")).await.contains("poison"), "the letter says why it died");
    assert!(browser.has(&format!("{row} a[href='/jobs/{job}']")).await, "and links to its job");

    // The operator fixes the cause, then retries from the page.
    sqlx::raw_sql("DROP TRIGGER poison ON images").execute(&env.pool).await.unwrap();
    browser.find(&format!("{row} form.retry button")).await.click().await.unwrap();
    browser.wait_for_text("main h1", |text| text.contains(&job.to_string())).await;
    wait_until("the retried job completes", Duration::from_secs(60), || async {
        state(&env, job).await.0 == "completed"
    })
    .await;
    let (_, deleted, attempts) = state(&env, job).await;
    assert_eq!((deleted, attempts), (5, 1), "it ran again, once, and deleted everything");
    browser.client.refresh().await.unwrap();
    assert_eq!(browser.text("#status").await, "completed");
    assert_eq!(browser.text("#deleted").await, "5");
    assert!(dead_letters_of(&env, job).await.is_empty(), "the retry discarded its dead letter");
    browser.client.goto(&console.url("/dead")).await.unwrap();
    assert!(!browser.has(&row).await, "the page no longer lists it");
    let retries: i64 =
        sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE actor = $1 AND path = $2 AND status = 303")
            .bind(OPS.0)
            .bind(format!("/jobs/{job}/retry"))
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(retries, 1, "the retry is an audit row under the token's name");
    browser.close().await;
    env.cleanup_keys().await;
}
