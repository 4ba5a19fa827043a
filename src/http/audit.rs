//! The audit trail and the gate in front of the admin endpoints: every
//! request is authenticated here, and every one, accepted or refused, becomes
//! a structured log line and a row in `audit_log`, except repeated failed
//! authentications from one address, which become one summary row a window
//! (see [`super::failures`]), so that nobody can grow the table at will.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::auth::{bearer, Grant};
use super::error::ApiError;
use super::failures::{Audit, AuthFailures};
use super::params::Params;
use super::{Actor, AppState, JobCreated};

/// The header every state-changing request must carry when the API runs
/// without tokens (`--allow-unauthenticated`, loopback only). A page on any
/// site open in a browser on that machine can send a "simple" cross-site
/// POST to 127.0.0.1, with no preflight; it cannot add a custom header
/// without a CORS preflight, which this API never grants. With tokens, the
/// `Authorization` header plays this part (a browser never adds it itself).
pub const REQUEST_HEADER: &str = "x-janitor-request";

/// Authenticates, runs the request, then records it.
pub async fn gate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let remote = request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
    // The client behind a trusted proxy, so that one client's failures are
    // not charged to everyone behind it.
    let source = state.proxies.source(remote, request.headers());
    let method = request.method().to_string();
    // The full path: inside the nested router the prefix is stripped.
    let path =
        request.extensions().get::<OriginalUri>().map_or_else(|| request.uri().path(), |u| u.0.path()).to_owned();
    // An address past its failure limit is refused before its token is
    // looked at (see `failures`): a right guess is refused too.
    let admitted = match &state.tokens {
        None => Ok(()),
        Some(_) => state.failures.admit(source, &method, &path),
    };
    let grant = match (&state.tokens, admitted) {
        (None, _) => Some(Grant { name: "anonymous".to_owned(), read_only: false }),
        (Some(_), Err(_)) => None,
        (Some(tokens), Ok(())) => request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer)
            .and_then(|token| tokens.verify(token)),
    };
    let entry = Entry {
        actor: grant.as_ref().map(|grant| grant.name.clone()),
        method,
        path,
        // Recorded as given, even when invalid: the audit shows what was asked.
        params: Params::parse(request.uri().query(), &ALL_PARAMS)
            .map(|p| p.to_json())
            .unwrap_or_else(|_| raw_query(request.uri().query())),
        remote: state.proxies.audit_address(remote, request.headers()),
    };
    let cross_site =
        state.tokens.is_none() && !request.method().is_safe() && !request.headers().contains_key(REQUEST_HEADER);
    let (response, audit) = match (grant, admitted) {
        (_, Err((retry_after, audit))) => (ApiError::RateLimited { retry_after }.into_response(), audit),
        (None, Ok(())) => {
            let audit = state.failures.failed(source, &entry.method, &entry.path);
            (ApiError::Unauthorized.into_response(), audit)
        }
        (Some(_), Ok(())) if cross_site => {
            let message = format!(
                "without admin tokens, a {} request must carry the header X-Janitor-Request (any value), so that no \
                 web page can send it cross-site",
                entry.method
            );
            (ApiError::Forbidden(message).into_response(), Audit::Write)
        }
        (Some(grant), Ok(())) if grant.read_only && !request.method().is_safe() => {
            let message = format!("token {:?} is read-only: it may read, not {}", grant.name, entry.method);
            (ApiError::Forbidden(message).into_response(), Audit::Write)
        }
        (Some(grant), Ok(())) => {
            request.extensions_mut().insert(Actor(grant.name));
            // The request runs, and its row is written, in a task of its
            // own: a client that hangs up, or the request timeout, drops
            // this future but not the work it started (a restore goes on
            // moving files on a blocking thread), and the audit row of
            // what was done is still written.
            let pool = state.pool.clone();
            let run = tokio::spawn(async move {
                let response = next.run(request).await;
                let job_id = response.extensions().get::<JobCreated>().map(|j| j.0);
                record(&pool, &entry, response.status().as_u16(), job_id).await;
                response
            });
            return match run.await {
                Ok(response) => response,
                Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                Err(err) => ApiError::Internal(anyhow::anyhow!("the request's task ended: {err}")).into_response(),
            };
        }
    };
    let job_id = response.extensions().get::<JobCreated>().map(|j| j.0);
    match audit {
        Audit::Write => record(&state.pool, &entry, response.status().as_u16(), job_id).await,
        Audit::Counted => tracing::debug!(remote = %source, "failed authentication counted for the summary row"),
    }
    response
}

/// Writes the summary rows of the failure windows that ended (all of them
/// when `all`, at shutdown).
pub async fn record_failures(pool: &PgPool, failures: &AuthFailures, all: bool) {
    for summary in failures.drain(all) {
        let total = summary.unauthorized + summary.refused;
        let detail = format!(
            "{total} further failed authentications from {} between {} and {} ({} with 401, {} refused with 429 \
             before their token was looked at)",
            summary.source, summary.first, summary.last, summary.unauthorized, summary.refused
        );
        tracing::warn!(audit = true, remote = %summary.source, repeats = total, "{detail}");
        let params = serde_json::json!({
            "repeats": total, "unauthorized": summary.unauthorized, "rate_limited": summary.refused,
            "first": summary.first, "last": summary.last,
        });
        let status: i32 = if summary.refused > 0 { 429 } else { 401 };
        let inserted = sqlx::query(
            "INSERT INTO audit_log (at, method, path, params, status, outcome, remote, detail)
             VALUES ($1, $2, $3, $4, $5, 'unauthorized_repeated', $6, $7)",
        )
        .bind(summary.last)
        .bind(&summary.last_method)
        .bind(&summary.last_path)
        .bind(params)
        .bind(status)
        .bind(summary.source.to_string())
        .bind(&detail)
        .execute(pool)
        .await;
        if let Err(err) = inserted {
            tracing::error!(error = %err, "could not write the audit row of repeated failures");
        }
    }
}

/// Every parameter any admin endpoint knows, for the audit's copy.
const ALL_PARAMS: [&str; 8] = ["dry_run", "days_old", "wait", "timeout", "operation", "status", "limit", "before"];

fn raw_query(query: Option<&str>) -> serde_json::Value {
    serde_json::json!({ "raw_query": query.unwrap_or_default() })
}

/// One audit row to write.
pub(crate) struct Entry {
    pub actor: Option<String>,
    pub method: String,
    pub path: String,
    pub params: serde_json::Value,
    pub remote: Option<String>,
}

fn outcome(status: u16) -> &'static str {
    match status {
        // The console answers a done action with 303 to the next page.
        200..=299 | 303 => "accepted",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        422 => "invalid",
        429 => "rate_limited",
        _ => "error",
    }
}

/// Logs and writes one audit row (errors are logged, never returned: the
/// request's outcome does not depend on its audit row).
pub(crate) async fn record(pool: &PgPool, entry: &Entry, status: u16, job_id: Option<Uuid>) {
    let outcome = outcome(status);
    tracing::info!(
        audit = true,
        actor = entry.actor.as_deref().unwrap_or("-"),
        method = %entry.method,
        path = %entry.path,
        params = %entry.params,
        status,
        outcome,
        job_id = job_id.map(|id| id.to_string()).unwrap_or_default(),
        remote = entry.remote.as_deref().unwrap_or("-"),
        "admin request {outcome}"
    );
    let inserted = sqlx::query(
        "INSERT INTO audit_log (actor, method, path, params, status, outcome, job_id, remote)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&entry.actor)
    .bind(&entry.method)
    .bind(&entry.path)
    .bind(&entry.params)
    .bind(i32::from(status))
    .bind(outcome)
    .bind(job_id)
    .bind(&entry.remote)
    .execute(pool)
    .await;
    if let Err(err) = inserted {
        tracing::error!(error = %err, "could not write the audit row");
    }
}

/// One audit row, as `janitor audit` shows it.
#[derive(Debug, Serialize, sqlx::FromRow)]
pub struct AuditRow {
    pub at: DateTime<Utc>,
    pub actor: Option<String>,
    pub method: String,
    pub path: String,
    pub params: serde_json::Value,
    pub status: i32,
    pub outcome: String,
    pub job_id: Option<Uuid>,
    pub remote: Option<String>,
}

/// Audit rows since a time, newest first.
pub async fn since(pool: &PgPool, since: DateTime<Utc>, limit: i64) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as(
        "SELECT at, actor, method, path, params, status, outcome, job_id, remote FROM audit_log
         WHERE at >= $1 ORDER BY at DESC, id DESC LIMIT $2",
    )
    .bind(since)
    .bind(limit)
    .fetch_all(pool)
    .await
}
