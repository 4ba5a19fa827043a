//! `janitor serve`: the admin HTTP API (axum), with the same paths, query
//! parameters and response fields as the application's original cleanup
//! endpoints, plus authentication, rate limits, audit and metrics.
//!
//! - [`cleanup`]: the endpoints under `/api/v1/admin/cleanup`.
//! - [`audit`]: the gate in front of them (bearer tokens) and the audit trail.
//! - [`auth`], [`limits`], [`params`]: tokens, rate limits, query validation.
//! - [`failures`]: failed authentications, limited and aggregated per address;
//!   [`proxies`]: that address behind trusted reverse proxies.
//! - [`metrics`]: `/metrics`. [`error`]: `ApiError`, the JSON error bodies.
//! - [`console`]: the operations console, HTML pages for a browser at `/`,
//!   with their own sessions (a cookie) instead of bearer tokens.

pub mod audit;
pub mod auth;
pub mod cleanup;
pub mod console;
mod docs;
pub mod error;
pub mod failures;
pub mod jobs;
pub mod limits;
pub mod metrics;
pub mod params;
pub mod proxies;
pub mod schemas;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use janitor_workers::producer::Producer;
use sqlx::PgPool;
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;
use utoipa::OpenApi as _;
use uuid::Uuid;

use self::auth::Tokens;
use self::failures::AuthFailures;
use self::limits::RateLimiter;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub producer: Producer,
    pub redis: janitor_workers::RedisConnection,
    /// `None`: explicitly unauthenticated (loopback only).
    pub tokens: Option<Arc<Tokens>>,
    pub limits: Arc<RateLimiter>,
    /// Failed authentications per remote address.
    pub failures: Arc<AuthFailures>,
    /// The proxies whose `X-Forwarded-For` names the client that the
    /// failure limit charges (`JANITOR_TRUSTED_PROXIES`; empty: none).
    pub proxies: Arc<proxies::TrustedProxies>,
    /// The shortest orphan grace period a request may ask for.
    pub min_grace: std::time::Duration,
    /// The storage root that restores act on (`JANITOR_STORAGE_ROOT`);
    /// `None` when this process was given none (restores then explain so).
    pub storage_root: Option<std::path::PathBuf>,
    /// The schedules the console shows (the config file's, or the defaults).
    pub schedules: Arc<Vec<janitor_workers::schedule::Schedule>>,
    /// The overview's "Reclaimable now" figures, computed at most once a
    /// minute in the background and shared by every view.
    pub reclaimable: Arc<console::Reclaimable>,
}

/// The token name of an authenticated request (set by [`audit::gate`]).
#[derive(Debug, Clone)]
pub struct Actor(pub String);

/// Set on a response that created (or found) a job, for the audit row.
#[derive(Debug, Clone, Copy)]
pub struct JobCreated(pub Uuid);

/// Requests may not carry bodies of more than this.
const BODY_LIMIT: usize = 16 * 1024;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(title = "janitor admin API", description = "Cleanup of the face-swap application's storage."),
    paths(cleanup::expired, cleanup::session, cleanup::old_results, cleanup::orphaned, cleanup::all,
          cleanup::stats, cleanup::job, cleanup::jobs, jobs::cancel, jobs::retry, jobs::restore, jobs::dead,
          jobs::discard),
    modifiers(&BearerAuth),
    security(("bearer" = []))
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        let scheme = HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build();
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The whole API.
pub fn router(state: AppState) -> Router {
    let admin = Router::new()
        .route("/expired", post(cleanup::expired))
        .route("/session/{session_id}", post(cleanup::session))
        .route("/old-results", post(cleanup::old_results))
        .route("/orphaned", post(cleanup::orphaned))
        .route("/all", post(cleanup::all))
        .route("/stats", get(cleanup::stats))
        .route("/jobs", get(cleanup::jobs))
        .route("/jobs/{job_id}", get(cleanup::job))
        .route("/jobs/{job_id}/cancel", post(jobs::cancel))
        .route("/jobs/{job_id}/retry", post(jobs::retry))
        .route("/jobs/{job_id}/restore", post(jobs::restore))
        .route("/dead", get(jobs::dead))
        .route("/dead/{target}/discard", post(jobs::discard))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), audit::gate));
    let trace = TraceLayer::new_for_http().make_span_with(|request: &Request| {
        let route = request.extensions().get::<MatchedPath>().map(MatchedPath::as_str).unwrap_or("-");
        tracing::info_span!("request", method = %request.method(), route)
    });
    Router::new()
        .nest("/api/v1/admin/cleanup", admin)
        .route("/healthz", get(|| async { "ok" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics::metrics))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .merge(docs::routes())
        .merge(console::routes())
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        // Longer than the longest `wait=true`, so a slow client is cut off
        // and a waiting one is not.
        .layer(TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, params::MAX_WAIT + Duration::from_secs(15)))
        .layer(trace)
        .with_state(state)
}

/// How long `/readyz` waits for Redis.
const READY_TIMEOUT: Duration = Duration::from_secs(2);

async fn ready(State(state): State<AppState>) -> impl IntoResponse {
    let database = sqlx::query("SELECT 1").execute(&state.pool).await.is_ok();
    // The queue's own slot (on a cluster, a PING would ask every master,
    // and any unrelated one being down would make janitor unready), within
    // a bound (a cut-off master must not hang the probe).
    let mut redis = state.redis.clone();
    let mut exists = redis::cmd("EXISTS");
    exists.arg(state.producer.layout().ids());
    let probe = exists.query_async::<i64>(&mut redis);
    let redis = tokio::time::timeout(READY_TIMEOUT, probe).await.is_ok_and(|reply| reply.is_ok());
    let status = if database && redis { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(serde_json::json!({ "database": database, "redis": redis })))
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let (pool, failures) = (state.pool.clone(), state.failures.clone());
    // Writes the summary rows of repeated failed authentications as their
    // windows end, and the rest when the server stops.
    let flusher = tokio::spawn({
        let (pool, failures) = (pool.clone(), failures.clone());
        async move {
            let mut every = tokio::time::interval(Duration::from_secs(5));
            loop {
                every.tick().await;
                audit::record_failures(&pool, &failures, false).await;
            }
        }
    });
    let app = router(state).into_make_service_with_connect_info::<SocketAddr>();
    let served = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
    flusher.abort();
    audit::record_failures(&pool, &failures, true).await;
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use utoipa::OpenApi as _;

    use super::ApiDoc;

    /// `/openapi.json` passes `openapi-spec-validator` (PyPI), and every
    /// response of every operation says what its body is.
    #[test]
    fn the_openapi_document_is_valid_and_every_response_has_a_schema() {
        let document = serde_json::to_value(ApiDoc::openapi()).unwrap();
        let mut bare = Vec::new();
        for (path, item) in document["paths"].as_object().unwrap() {
            for (method, operation) in item.as_object().unwrap() {
                for (status, response) in operation["responses"].as_object().unwrap() {
                    let has_schema = response["content"]
                        .as_object()
                        .is_some_and(|content| content.values().all(|media| media.get("schema").is_some()));
                    if !has_schema {
                        bare.push(format!("{method} {path} {status}"));
                    }
                }
            }
        }
        assert!(bare.is_empty(), "responses without a schema: {bare:#?}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("openapi.json");
        std::fs::write(&file, serde_json::to_string_pretty(&document).unwrap()).unwrap();
        // As a module of the python3 that pip installed it for: it works
        // wherever pip put the console script.
        let output = std::process::Command::new("python3")
            .args(["-m", "openapi_spec_validator"])
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("python3 must be installed: {e}"));
        let said = String::from_utf8_lossy(&output.stderr);
        assert!(
            !said.contains("No module named"),
            "openapi-spec-validator must be installed (python3 -m pip install openapi-spec-validator): {said}"
        );
        assert!(
            output.status.success(),
            "openapi-spec-validator: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
