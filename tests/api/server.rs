//! An in-process `janitor::http::serve` on a real socket (127.0.0.1:0), with
//! the test's own database, storage root and Redis prefix (the queue
//! harness's [`Env`]), plus shortcuts for requests and for what the API
//! leaves behind (job rows, audit rows, Redis keys).
//!
//! The server runs on a runtime of its own, on its own thread, with its own
//! pool: `#[sqlx::test]` runs the test on a single-threaded runtime, which
//! would otherwise share one core between the clients and the server.

use std::net::SocketAddr;
use std::sync::Arc;
use std::thread::JoinHandle;

use janitor::http::auth::Tokens;
use janitor::http::failures::{self, AuthFailures};
use janitor::http::limits::{RateLimiter, DEFAULT_LIMITS};
use janitor::http::{self, AppState};
use janitor_workers::layout::Layout;
use janitor_workers::producer::Producer;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::PgPool;
use tokio::sync::oneshot;
use uuid::Uuid;

use crate::client::{self, Response};
use crate::harness::Env;
use crate::support;

/// The admin API's path prefix.
pub const BASE: &str = "/api/v1/admin/cleanup";

/// Two tokens, by (name, token).
pub const OPS: (&str, &str) = ("ops", "ops-token-0123456789abcdef");
pub const CRON: (&str, &str) = ("cron", "cron-token-fedcba9876543210");
/// A read-only token (`name:ro`, as in `JANITOR_ADMIN_TOKENS`): its name is `viewer`.
pub const VIEWER: (&str, &str) = ("viewer:ro", "viewer-token-00112233445566");

/// How the server is set up.
pub struct ApiConfig {
    /// `None`: unauthenticated.
    pub tokens: Option<Vec<(&'static str, &'static str)>>,
    pub rate_limits: String,
    /// The Redis the server uses, if not the shared one (one that is down,
    /// say: the server starts anyway and connects on first use).
    pub redis_url: Option<String>,
    /// Whether the server is given the test's storage root (restores need it).
    pub storage_root: bool,
    /// `JANITOR_TRUSTED_PROXIES`: whose X-Forwarded-For is believed.
    pub trusted_proxies: String,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            tokens: Some(vec![OPS, CRON]),
            rate_limits: DEFAULT_LIMITS.to_owned(),
            redis_url: None,
            storage_root: true,
            trusted_proxies: String::new(),
        }
    }
}

/// A running API and the world it serves.
pub struct Api {
    pub env: Env,
    pub addr: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Api {
    pub async fn start(pool: PgPool) -> Self {
        Self::with(pool, ApiConfig::default()).await
    }

    pub async fn with(pool: PgPool, config: ApiConfig) -> Self {
        let env = match &config.redis_url {
            Some(url) => Env::with_redis(pool, url.clone()),
            None => Env::new(pool),
        };
        let database_url = support::database_url(&env.pool);
        let (redis_url, prefix) = (env.redis_url.clone(), env.prefix.clone());
        let root = config.storage_root.then(|| env.store.root().to_owned());
        let (ready_tx, ready_rx) = oneshot::channel();
        let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
            runtime.block_on(async move {
                let mut state = state(&database_url, &redis_url, &prefix, &config).await;
                state.storage_root = root;
                let pool = state.pool.clone();
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind 127.0.0.1:0");
                let _ = ready_tx.send(listener.local_addr().unwrap());
                let shutdown = async move {
                    let _ = shutdown_rx.await;
                };
                http::serve(listener, state, shutdown).await.expect("the API serves");
                pool.close().await;
            });
        });
        let addr = ready_rx.await.expect("the API starts (see its panic above)");
        Self { env, addr, shutdown: Some(shutdown_tx), thread: Some(thread) }
    }

    pub fn pool(&self) -> &PgPool {
        &self.env.pool
    }

    /// `POST {BASE}{path}`.
    pub async fn post(&self, path: &str, token: Option<&str>) -> Response {
        client::request(self.addr, "POST", &format!("{BASE}{path}"), token).await
    }

    /// `GET {BASE}{path}`.
    pub async fn get(&self, path: &str, token: Option<&str>) -> Response {
        client::request(self.addr, "GET", &format!("{BASE}{path}"), token).await
    }

    /// `GET` of a path outside the admin prefix.
    pub async fn get_root(&self, path: &str) -> Response {
        client::request(self.addr, "GET", path, None).await
    }

    /// The job rows, as (job_id, operation, status, requested_by).
    pub async fn jobs(&self) -> Vec<(Uuid, String, String, Option<String>)> {
        sqlx::query_as("SELECT job_id, operation, status, requested_by FROM job_results ORDER BY created_at, job_id")
            .fetch_all(self.pool())
            .await
            .unwrap()
    }

    pub async fn audit_rows(&self) -> Vec<AuditRow> {
        sqlx::query_as("SELECT actor, method, path, params, status, outcome, job_id FROM audit_log ORDER BY id")
            .fetch_all(self.pool())
            .await
            .unwrap()
    }

    /// This test's Redis keys.
    pub async fn redis_keys(&self) -> Vec<String> {
        let mut redis = self.env.redis().await;
        redis::cmd("KEYS").arg(self.env.any_key()).query_async(&mut redis).await.unwrap()
    }

    /// Stops the server and deletes this test's Redis keys.
    pub async fn finish(mut self) {
        self.stop();
        self.env.cleanup_keys().await;
    }

    /// Stops the server (gracefully: what it writes at shutdown is written);
    /// its database connections are closed when this returns.
    pub fn stop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            // Only this server's runtime runs there, so blocking here
            // cannot starve it; graceful shutdown closes idle connections.
            let _ = thread.join();
        }
    }
}

impl Drop for Api {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The `application_name` of the server's database connections.
pub const SERVER_APPLICATION: &str = "janitor-api-test-server";

/// (actor, method, path, params, status, outcome, job_id)
pub type AuditRow = (Option<String>, String, String, serde_json::Value, i32, String, Option<Uuid>);

async fn state(database_url: &str, redis_url: &str, prefix: &str, config: &ApiConfig) -> AppState {
    // Named, so a test can tell the server's connections from its own.
    let options = database_url.parse::<PgConnectOptions>().unwrap().application_name(SERVER_APPLICATION);
    let pool =
        PgPoolOptions::new().max_connections(20).connect_with(options).await.expect("connect to the test database");
    // Connected on first use, as `janitor serve` does.
    let client = redis::Client::open(redis_url).unwrap();
    let producer = Producer::lazy(pool.clone(), client.clone(), Layout::new(prefix)).expect("producer");
    let redis = janitor_workers::RedisTarget::from(client).connect_lazy(Default::default()).unwrap();
    // Parsed as `JANITOR_ADMIN_TOKENS` is, so that `name:ro` is read-only.
    let tokens = config.tokens.as_ref().map(|tokens| {
        let raw: Vec<String> = tokens.iter().map(|(name, token)| format!("{name}={token}")).collect();
        Arc::new(Tokens::new(Tokens::parse_env(&raw.join(",")).unwrap()).unwrap())
    });
    let limits = Arc::new(RateLimiter::parse(&config.rate_limits).unwrap());
    let failures = Arc::new(AuthFailures::new(limits.limit("auth_failure").unwrap_or(failures::DEFAULT_LIMIT)));
    let min_grace = janitor_workers::engine::DEFAULT_MIN_GRACE;
    let schedules = Arc::new(janitor_workers::schedule::Schedule::defaults());
    let proxies = Arc::new(janitor::http::proxies::TrustedProxies::parse(&config.trusted_proxies).unwrap());
    AppState {
        pool,
        producer,
        redis,
        tokens,
        limits,
        failures,
        proxies,
        min_grace,
        storage_root: None,
        schedules,
        reclaimable: Arc::default(),
    }
}

/// The job id of a 202, checking the rest of its shape.
pub fn accepted_job(response: &Response) -> Uuid {
    assert_eq!(response.status, 202, "{}", response.text());
    let body = response.json();
    let job_id: Uuid = body["job_id"].as_str().expect("job_id").parse().expect("job_id is a UUID");
    assert_eq!(body["status"], "queued", "{body}");
    assert_eq!(body["status_url"], format!("{BASE}/jobs/{job_id}"), "{body}");
    job_id
}
