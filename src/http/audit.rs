//! The audit trail and the gate in front of the admin endpoints: every
//! request is authenticated here, and every one, accepted or refused, becomes
//! a structured log line and a row in `audit_log`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, OriginalUri, Request, State};
use axum::http::header::AUTHORIZATION;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use super::auth::bearer;
use super::error::ApiError;
use super::params::Params;
use super::{Actor, AppState, JobCreated};

/// Authenticates, runs the request, then records it.
pub async fn gate(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    let actor = match &state.tokens {
        None => Some("anonymous".to_owned()),
        Some(tokens) => request
            .headers()
            .get(AUTHORIZATION)
            .and_then(|h| h.to_str().ok())
            .and_then(bearer)
            .and_then(|token| tokens.verify(token))
            .map(str::to_owned),
    };
    let entry = Entry {
        actor: actor.clone(),
        method: request.method().to_string(),
        // The full path: inside the nested router the prefix is stripped.
        path: request.extensions().get::<OriginalUri>().map_or_else(|| request.uri().path(), |u| u.0.path()).to_owned(),
        // Recorded as given, even when invalid: the audit shows what was asked.
        params: Params::parse(request.uri().query(), &ALL_PARAMS)
            .map(|p| p.to_json())
            .unwrap_or_else(|_| raw_query(request.uri().query())),
        remote: request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()),
    };
    let response = match actor {
        None => ApiError::Unauthorized.into_response(),
        Some(actor) => {
            request.extensions_mut().insert(Actor(actor));
            next.run(request).await
        }
    };
    let job_id = response.extensions().get::<JobCreated>().map(|j| j.0);
    record(&state.pool, &entry, response.status().as_u16(), job_id).await;
    response
}

/// Every parameter any admin endpoint knows, for the audit's copy.
const ALL_PARAMS: [&str; 8] = ["dry_run", "days_old", "wait", "timeout", "operation", "status", "limit", "before"];

fn raw_query(query: Option<&str>) -> serde_json::Value {
    serde_json::json!({ "raw_query": query.unwrap_or_default() })
}

struct Entry {
    actor: Option<String>,
    method: String,
    path: String,
    params: serde_json::Value,
    remote: Option<String>,
}

fn outcome(status: u16) -> &'static str {
    match status {
        200..=299 => "accepted",
        401 => "unauthorized",
        404 => "not_found",
        422 => "invalid",
        429 => "rate_limited",
        _ => "error",
    }
}

async fn record(pool: &PgPool, entry: &Entry, status: u16, job_id: Option<Uuid>) {
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
