//! What an operator does in the console, in a real browser.

use std::time::Duration;

use sqlx::PgPool;
use uuid::Uuid;

use crate::browser::Browser;
use crate::console::{Console, OPS, VIEWER};
use crate::harness::{wait_until, Env};
use crate::support::seed_expired;

/// The job's status in its row.
async fn status(env: &Env, job: Uuid) -> String {
    env.job(job).await.expect("the job has a row").0
}

/// Submits a form to `action` from the page, as a page of another origin
/// or a hand-made request would: with the given fields only. Returns once
/// the answer is the page shown.
async fn post_form(browser: &Browser, action: &str, fields: &[(&str, &str)]) {
    let fields: serde_json::Map<String, serde_json::Value> =
        fields.iter().map(|(name, value)| ((*name).to_owned(), serde_json::Value::from(*value))).collect();
    let script = "const [action, fields] = arguments;
        document.documentElement.dataset.left = 'yes';
        const form = document.createElement('form');
        form.method = 'post';
        form.action = action;
        for (const [name, value] of Object.entries(fields)) {
            const input = document.createElement('input');
            input.type = 'hidden'; input.name = name; input.value = value;
            form.appendChild(input);
        }
        document.body.appendChild(form);
        HTMLFormElement.prototype.submit.call(form);";
    browser.client.execute(script, vec![action.into(), fields.into()]).await.unwrap();
    // The old page carries the mark; the answer does not.
    let arrived = "return document.readyState === 'complete' && document.documentElement.dataset.left !== 'yes'";
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while browser.client.execute(arrived, vec![]).await.ok() != Some(serde_json::Value::Bool(true)) {
        assert!(std::time::Instant::now() < deadline, "no answer to the form to {action} within 20 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The items done that the progress bar `css` selects shows.
async fn progress(browser: &Browser, css: &str) -> f64 {
    let value = browser.find(css).await.attr("data-done").await.unwrap().unwrap_or_default();
    value.parse().unwrap_or(0.0)
}

/// Log in, watch a running job's progress move without a reload, open it,
/// cancel it (it stops at its next batch with exact counts), log out.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn an_operator_watches_a_job_move_cancels_it_and_logs_out(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired(&env.pool, &env.store, 400, 1).await;
    let console = Console::start(&env).await;
    // Paced, so the job runs for about 20 s in batches of 10.
    let _worker = env.worker(&[], &[("JANITOR_MAX_DELETES_PER_SEC", "20"), ("JANITOR_BATCH_SIZE", "10")]);
    let job = env.enqueue(&["expired"]).await;
    wait_until("the job runs", Duration::from_secs(30), || async { status(&env, job).await == "running" }).await;

    let browser = Browser::start().await;
    console.log_in(&browser, OPS.1).await;
    assert!(browser.text("header").await.contains(OPS.0), "the header names the token");
    // The running job's bar moves while the page stays as it is.
    let bar = format!("#running .job[data-job-id='{job}'] progress");
    // A mark on this document: a reload would drop it.
    browser.client.execute("document.documentElement.dataset.mark = 'kept'", vec![]).await.unwrap();
    let first = progress(&browser, &bar).await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while progress(&browser, &bar).await <= first {
        assert!(std::time::Instant::now() < deadline, "the progress bar did not move from {first} within 20 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // Its maximum is the job's estimated total, and the summary has an ETA.
    let max = browser.find(&bar).await.attr("max").await.unwrap();
    assert_eq!(max.as_deref(), Some("400"), "the bar's maximum is the job's estimated total");
    let summary = browser.text(&format!("#running .job[data-job-id='{job}'] .summary")).await;
    assert!(summary.contains(" of about 400 items") && !summary.contains("ETA unknown"), "{summary}");
    let kept: serde_json::Value =
        browser.client.execute("return document.documentElement.dataset.mark", vec![]).await.unwrap();
    assert_eq!(kept, "kept", "the page updated itself, without a reload");
    browser.screenshot("console-overview").await;

    browser.find(&format!("#running .job[data-job-id='{job}'] a")).await.click().await.unwrap();
    browser.wait_for_text("main h1", |text| text.contains(&job.to_string())).await;
    assert_eq!(browser.text("#status").await, "running");
    browser.screenshot("console-job").await;
    browser.find("form#cancel button").await.click().await.unwrap();
    wait_until("the job is cancelled", Duration::from_secs(30), || async { status(&env, job).await == "cancelled" })
        .await;
    browser.client.refresh().await.unwrap();
    assert_eq!(browser.text("#status").await, "cancelled");
    let (_, deleted, ..) = env.job(job).await.unwrap();
    assert!(deleted > 0 && deleted < 400, "stopped part way: {deleted}");
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM images").fetch_one(&env.pool).await.unwrap();
    assert_eq!(left, 400 - deleted, "its counts are exact");
    let cancels: i64 = sqlx::query_scalar("SELECT count(*) FROM audit_log WHERE actor = $1 AND path LIKE '%cancel'")
        .bind(OPS.0)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(cancels, 1, "the cancel is an audit row under the token's name");

    browser.find("form#logout button").await.click().await.unwrap();
    browser.find("form#login").await;
    browser.client.goto(&console.url("/")).await.unwrap();
    browser.find("form#login").await;
    assert_eq!(browser.path().await, "/login", "the session ended");
    browser.close().await;
    env.cleanup_keys().await;
}

/// A read-only token sees the jobs but gets no buttons, and a hand-made
/// POST with its session's CSRF token is refused; the job is untouched.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_read_only_token_sees_everything_and_changes_nothing(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired(&env.pool, &env.store, 5, 1).await;
    let console = Console::start(&env).await;
    let job = env.enqueue(&["expired"]).await; // No worker: it stays queued.

    let browser = Browser::start().await;
    console.log_in(&browser, VIEWER.1).await;
    browser.client.goto(&console.url("/jobs")).await.unwrap();
    browser.find(&format!("table#jobs tr[data-job-id='{job}']")).await;
    browser.client.goto(&console.url(&format!("/jobs/{job}"))).await.unwrap();
    assert_eq!(browser.text("#status").await, "queued");
    assert!(!browser.has("form#cancel").await, "a read-only session is offered no cancel");
    let csrf = browser.find("form#logout input[name=csrf]").await.prop("value").await.unwrap().unwrap();
    post_form(&browser, &console.url(&format!("/jobs/{job}/cancel")), &[("csrf", &csrf)]).await;
    browser.wait_for_text("main h1", |text| text == "Forbidden").await;
    assert!(browser.text("main p.error").await.contains("read-only"));
    assert_eq!(status(&env, job).await, "queued");
    let requested: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT cancel_requested_at FROM job_results WHERE job_id = $1")
            .bind(job)
            .fetch_one(&env.pool)
            .await
            .unwrap();
    assert_eq!(requested, None);
    browser.close().await;
    env.cleanup_keys().await;
}

/// A POST without the session's CSRF token (what a page of another origin
/// could send) is refused; the same button with it cancels the job.
#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn a_post_without_the_csrf_token_is_refused(pool: PgPool) {
    let env = Env::new(pool);
    seed_expired(&env.pool, &env.store, 5, 1).await;
    let console = Console::start(&env).await;
    let job = env.enqueue(&["expired"]).await; // No worker: it stays queued.

    let browser = Browser::start().await;
    console.log_in(&browser, OPS.1).await;
    browser.client.goto(&console.url(&format!("/jobs/{job}"))).await.unwrap();
    browser.find("form#cancel").await;
    for fields in [&[][..], &[("csrf", "not-the-token")][..]] {
        post_form(&browser, &console.url(&format!("/jobs/{job}/cancel")), fields).await;
        browser.wait_for_text("main h1", |text| text == "Forbidden").await;
        assert!(browser.text("main p.error").await.contains("CSRF"), "{fields:?}");
    }
    assert_eq!(status(&env, job).await, "queued");

    browser.client.goto(&console.url(&format!("/jobs/{job}"))).await.unwrap();
    browser.find("form#cancel button").await.click().await.unwrap();
    wait_until("the job is cancelled", Duration::from_secs(20), || async { status(&env, job).await == "cancelled" })
        .await;
    browser.close().await;
    env.cleanup_keys().await;
}
