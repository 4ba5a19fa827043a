//! The real `janitor serve` process: it refuses to start without
//! authentication (or unauthenticated off loopback), and once started it
//! serves the API with the tokens from `JANITOR_ADMIN_TOKENS`.

use std::net::SocketAddr;
use std::time::Duration;

use sqlx::PgPool;

use crate::client::{self, Conn};
use crate::harness::{wait_until, Env};
use crate::server::{accepted_job, BASE};

/// Runs `janitor <args>` that is expected to exit on its own.
async fn exits(env: &Env, args: &[&str]) -> (i32, String) {
    let run = tokio::time::timeout(Duration::from_secs(30), env.janitor(args));
    let (code, _, stderr) = run.await.unwrap_or_else(|_| panic!("janitor {args:?} kept running"));
    (code, stderr)
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn serve_refuses_to_start_without_authentication(pool: PgPool) {
    let env = Env::new(pool);
    let (code, stderr) = exits(&env, &["serve", "--listen", "127.0.0.1:0"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("no admin token is configured"), "{stderr}");
    assert!(stderr.contains("JANITOR_ADMIN_TOKENS"), "the message says how to configure one: {stderr}");

    let (code, stderr) = exits(&env, &["serve", "--listen", "0.0.0.0:0", "--allow-unauthenticated"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("only allowed on a loopback address"), "{stderr}");

    let (code, stderr) = exits(&env, &["serve", "--listen", "127.0.0.1:0", "--admin-tokens", "ops=short"]).await;
    assert_eq!(code, 2, "a token shorter than 16 characters is refused: {stderr}");
    let tokens = "--admin-tokens=ops=ops-token-0123456789abcdef";
    let (code, stderr) = exits(&env, &["serve", "--listen", "127.0.0.1:0", tokens, "--rate-limits", "all=5/w"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("JANITOR_RATE_LIMITS"), "{stderr}");
    assert_eq!(sqlx::query_scalar::<_, i64>("SELECT count(*) FROM job_results").fetch_one(&env.pool).await.unwrap(), 0);
}

/// A free loopback port (bound, then released for the child to take).
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

async fn wait_for_listener(addr: SocketAddr) {
    wait_until("janitor serve listens", Duration::from_secs(30), || async move { Conn::connect(addr).await.is_ok() })
        .await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn serve_answers_with_the_configured_tokens_and_stops_on_sigterm(pool: PgPool) {
    let env = Env::new(pool);
    let addr = free_addr();
    let listen = addr.to_string();
    let server = env.spawn(
        &["serve", "--listen", &listen],
        &[("JANITOR_ADMIN_TOKENS", "ops=ops-token-0123456789abcdef, app = app-token-0123456789abcdef")],
    );
    wait_for_listener(addr).await;

    let ready = client::request(addr, "GET", "/readyz", None).await;
    assert_eq!((ready.status, ready.json()), (200, serde_json::json!({"database": true, "redis": true})));
    let path = format!("{BASE}/session/from-app");
    assert_eq!(client::request(addr, "POST", &path, None).await.status, 401);
    let job_id = accepted_job(&client::request(addr, "POST", &path, Some("app-token-0123456789abcdef")).await);
    let requested_by: Option<String> = sqlx::query_scalar("SELECT requested_by FROM job_results WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(requested_by.as_deref(), Some("app"));
    let job = client::request(addr, "GET", &format!("{BASE}/jobs/{job_id}"), Some("ops-token-0123456789abcdef")).await;
    assert_eq!((job.status, job.json()["status"].as_str()), (200, Some("queued")));
    let (code, stdout, stderr) = env.janitor(&["audit", "--since", "1h", "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<serde_json::Value> = serde_json::from_str(&stdout).unwrap();
    let outcomes: Vec<&str> = rows.iter().filter_map(|r| r["outcome"].as_str()).collect();
    assert_eq!(outcomes, ["accepted", "accepted", "unauthorized"], "newest first: {stdout}");

    server.signal("TERM").await;
    assert_eq!(server.exit_code(Duration::from_secs(30)).await, Some(0));
    env.cleanup_keys().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn serve_without_tokens_on_loopback_records_an_anonymous_actor(pool: PgPool) {
    let env = Env::new(pool);
    let addr = free_addr();
    let server = env.spawn(&["serve", "--listen", &addr.to_string(), "--allow-unauthenticated"], &[]);
    wait_for_listener(addr).await;
    let target = format!("{BASE}/expired?dry_run=true");
    let refused = client::request(addr, "POST", &target, None).await;
    assert_eq!(
        refused.status,
        403,
        "a POST without X-Janitor-Request could come from any web page: {}",
        refused.text()
    );
    let job_id = accepted_job(&client::request_with(addr, "POST", &target, None, &[("X-Janitor-Request", "1")]).await);
    let actor: Option<String> = sqlx::query_scalar("SELECT actor FROM audit_log WHERE job_id = $1")
        .bind(job_id)
        .fetch_one(&env.pool)
        .await
        .unwrap();
    assert_eq!(actor.as_deref(), Some("anonymous"));
    server.signal("TERM").await;
    assert_eq!(server.exit_code(Duration::from_secs(30)).await, Some(0));
    env.cleanup_keys().await;
}
