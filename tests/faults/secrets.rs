//! Secrets never reach logs or error messages: the database password, the
//! Redis password and the admin API token, with debug logging on, in JSON,
//! through successful runs, a worker's life, the HTTP API and every kind of
//! connection failure.

use std::net::{SocketAddr, TcpListener};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::fixtures::seed_expired;
use crate::harness::wait_until;
use crate::process::{cleanup_keys, prefix, Janitor};
use crate::support::{count_images, database_url, insert_image, Image, Store};

const DB_PASSWORD: &str = "s3cr3t-pw";
const REDIS_PASSWORD: &str = "r3dis-pw";
const TOKEN: &str = "tok3n-0123456789abcdef";
const SECRETS: [&str; 3] = [DB_PASSWORD, REDIS_PASSWORD, TOKEN];

/// Debug logs, as JSON (where a `Debug` dump of the settings would show).
const LOUD: [(&str, &str); 2] = [("RUST_LOG", "debug"), ("JANITOR_LOG_FORMAT", "json")];

/// A `redis-server` that requires a password, so the password really is
/// used (and could leak) on every connection.
struct PasswordRedis {
    port: u16,
    child: std::process::Child,
}

impl PasswordRedis {
    async fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--requirepass", REDIS_PASSWORD])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let redis = Self { port, child };
        let url = redis.url();
        wait_until("the password redis answers", Duration::from_secs(10), || {
            let url = url.clone();
            async move {
                let Ok(client) = redis::Client::open(url) else { return false };
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else { return false };
                redis::cmd("PING").query_async::<String>(&mut conn).await.is_ok()
            }
        })
        .await;
        redis
    }

    fn url(&self) -> String {
        format!("redis://:{REDIS_PASSWORD}@127.0.0.1:{}", self.port)
    }
}

impl Drop for PasswordRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The test database's URL with a password in it (trust authentication
/// ignores it, so every command really connects with it).
fn url_with_password(pool: &PgPool) -> String {
    let mut url = url::Url::parse(&database_url(pool)).unwrap();
    url.set_password(Some(DB_PASSWORD)).unwrap();
    url.to_string()
}

/// Everything the processes printed, labelled, for one final check.
#[derive(Default)]
struct Transcript(Vec<(String, String)>);

impl Transcript {
    fn add(&mut self, what: &str, output: &str) {
        self.0.push((what.to_owned(), output.to_owned()));
    }

    fn assert_clean(&self) {
        for (what, output) in &self.0 {
            for secret in SECRETS {
                assert!(!output.contains(secret), "{what} printed the secret {secret:?}:\n{output}");
            }
        }
    }
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn secrets_never_appear_in_logs_or_errors(pool: PgPool) {
    let store = Store::new();
    let redis = PasswordRedis::start().await;
    let prefix = prefix();
    let janitor = Janitor::new(&url_with_password(&pool), &redis.url(), &prefix, store.root()).with_all(&LOUD);
    let mut out = Transcript::default();

    // A run that deletes something, logging every batch.
    seed_expired(&pool, &store, "secrets", 30, 5).await;
    let (code, stdout, stderr) =
        janitor.run(&["run", "expired", "--json", "--batch-size", "10"], Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("\"level\":\"DEBUG\""), "debug logging is really on: {stderr}");
    out.add("janitor run expired (stdout)", &stdout);
    out.add("janitor run expired (stderr)", &stderr);

    // A worker's whole life: start, one job, SIGTERM.
    insert_image(&pool, Some(&store), &Image::fresh("photos/secrets/s.jpg", 5).session("sess-1")).await;
    let mut worker = janitor.spawn(&["worker", "--lease", "2s"]);
    let (code, stdout, stderr) =
        janitor.run(&["enqueue", "session", "sess-1", "--wait", "--json"], Duration::from_secs(30)).await;
    assert_eq!(code, 0, "{stderr}\nworker:\n{}", worker.stderr());
    out.add("janitor enqueue --wait (stdout)", &stdout);
    out.add("janitor enqueue --wait (stderr)", &stderr);
    worker.signal("TERM").await;
    assert_eq!(worker.exit_code(Duration::from_secs(20)).await, Some(0));
    assert!(worker.stderr().contains("\"level\":\"DEBUG\""), "{}", worker.stderr());
    out.add("janitor worker", &worker.stderr());
    out.add("janitor worker (stdout)", &worker.stdout());
    assert_eq!(count_images(&pool).await, 0);

    serve(&janitor, &mut out).await;
    unreachable_services(&janitor, &mut out).await;
    // The database keeps no secret either (errors, audit rows).
    let stored: String = sqlx::query_scalar(
        "SELECT coalesce((SELECT string_agg(j::text, ' ') FROM job_results j), '') ||
                coalesce((SELECT string_agg(a::text, ' ') FROM audit_log a), '')",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert!(stored.contains("sess-1"), "the rows are there: {stored}");
    out.add("job_results and audit_log rows", &stored);
    out.assert_clean();
    cleanup_keys(&redis.url(), &prefix).await;
}

/// `janitor serve` with a token: a start, accepted and refused requests,
/// SIGTERM.
async fn serve(janitor: &Janitor, out: &mut Transcript) {
    let mut server = janitor.clone().with("JANITOR_ADMIN_TOKENS", &format!("ops={TOKEN}")).spawn(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
    ]);
    let mut addr = None;
    wait_until("janitor serve logs its address", Duration::from_secs(30), || {
        addr = listening_on(&server.stderr());
        async move { addr.is_some() }
    })
    .await;
    let addr = addr.unwrap();
    let wrong = format!("{}X", &TOKEN[..TOKEN.len() - 1]);
    for (method, target, token, status) in [
        ("GET", "/api/v1/admin/cleanup/stats", TOKEN, 200),
        ("POST", "/api/v1/admin/cleanup/session/sess-2", TOKEN, 202),
        ("GET", "/api/v1/admin/cleanup/stats", wrong.as_str(), 401),
        ("GET", "/api/v1/admin/cleanup/jobs", TOKEN, 200),
    ] {
        let (code, response) = request(addr, method, target, token).await;
        assert_eq!(code, status, "{method} {target}: {response}\n{}", server.stderr());
        out.add(&format!("{method} {target} response"), &response);
    }
    server.signal("TERM").await;
    assert_eq!(server.exit_code(Duration::from_secs(20)).await, Some(0), "{}", server.stderr());
    out.add("janitor serve", &server.stderr());
    out.add("janitor serve (stdout)", &server.stdout());
}

/// The `listen` field of the "admin API listening" log line.
fn listening_on(stderr: &str) -> Option<SocketAddr> {
    stderr
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find_map(|line| line.get("listen")?.as_str()?.parse().ok())
}

/// One HTTP/1.1 request with a bearer token; returns (status, whole response).
async fn request(addr: SocketAddr, method: &str, target: &str, token: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect to janitor serve");
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).await.unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    (status, response)
}

/// Every command that meets a service it cannot reach says so, without the
/// password of the URL it tried.
async fn unreachable_services(janitor: &Janitor, out: &mut Transcript) {
    let no_redis = janitor.clone().with("REDIS_URL", &format!("redis://:{REDIS_PASSWORD}@127.0.0.1:1"));
    let no_database =
        janitor.clone().with("DATABASE_URL", &format!("postgres://postgres:{DB_PASSWORD}@127.0.0.1:1/janitor"));
    let serve_no_database = no_database.clone().with("JANITOR_ADMIN_TOKENS", &format!("ops={TOKEN}"));
    let cases: [(&str, &Janitor, &[&str], &str); 5] = [
        ("run, database unreachable", &no_database, &["run", "expired"], "database"),
        ("worker, database unreachable", &no_database, &["worker"], "database"),
        ("serve, database unreachable", &serve_no_database, &["serve", "--listen", "127.0.0.1:0"], "database"),
        ("enqueue, Redis unreachable", &no_redis, &["enqueue", "expired"], "redis"),
        ("worker, Redis unreachable", &no_redis, &["worker"], "redis"),
    ];
    let mut unnamed = Vec::new();
    for (what, janitor, args, service) in cases {
        let (code, stdout, stderr) = janitor.run(args, Duration::from_secs(60)).await;
        assert_eq!(code, 1, "{what}: {stderr}");
        out.add(what, &stderr);
        out.add(&format!("{what} (stdout)"), &stdout);
        // Checked after the secrets: an operator must learn which service
        // is down (the README promises it for the database).
        if !stderr.to_lowercase().contains(service) {
            unnamed.push(format!("{what}: {}", stderr.trim()));
        }
    }
    out.assert_clean();
    assert!(unnamed.is_empty(), "errors that do not name the unreachable service:\n{}", unnamed.join("\n"));
}
