//! The admin endpoints under `/api/v1/admin/cleanup`: the POSTs enqueue (or,
//! with `wait=true`, enqueue and wait), the GETs answer from Postgres.

use axum::extract::{Path, RawQuery, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use janitor_workers::producer::Enqueued;
use janitor_workers::report::result_json;
use janitor_workers::results::{self, ListFilter};
use janitor_workers::{CleanupJob, JobSpec, SessionId};
use serde_json::json;
use uuid::Uuid;

use super::error::ApiError;
use super::params::Params;
use super::schemas::{Accepted, ErrorBody, JobList, JobResult, Stats};
use super::{Actor, AppState, JobCreated};

const POST_PARAMS: [&str; 3] = ["dry_run", "wait", "timeout"];
const POST_DAYS_PARAMS: [&str; 4] = ["dry_run", "days_old", "wait", "timeout"];
const POST_ORPHAN_PARAMS: [&str; 4] = ["dry_run", "min_age", "wait", "timeout"];
const POST_ALL_PARAMS: [&str; 5] = ["dry_run", "days_old", "min_age", "wait", "timeout"];

#[utoipa::path(post, path = "/api/v1/admin/cleanup/expired", tag = "cleanup",
    params(("dry_run" = Option<bool>, Query), ("wait" = Option<bool>, Query), ("timeout" = Option<u64>, Query, description = "seconds, with wait")),
    responses((status = 202, description = "queued", body = Accepted), (status = 200, description = "finished (wait=true)", body = JobResult), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn expired(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &POST_PARAMS)?;
    submit(&state, &actor, CleanupJob::Expired, "expired", &params).await
}

#[utoipa::path(post, path = "/api/v1/admin/cleanup/session/{session_id}", tag = "cleanup",
    params(("session_id" = String, Path), ("dry_run" = Option<bool>, Query), ("wait" = Option<bool>, Query), ("timeout" = Option<u64>, Query)),
    responses((status = 202, description = "queued", body = Accepted), (status = 200, description = "finished (wait=true)", body = JobResult), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn session(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(session_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &POST_PARAMS)?;
    let session_id = SessionId::parse(&session_id).map_err(|e| ApiError::invalid("session_id", e.to_string()))?;
    submit(&state, &actor, CleanupJob::Session { session_id }, "session", &params).await
}

#[utoipa::path(post, path = "/api/v1/admin/cleanup/old-results", tag = "cleanup",
    params(("days_old" = Option<i64>, Query, description = "1 to 36500, default 30"), ("dry_run" = Option<bool>, Query), ("wait" = Option<bool>, Query), ("timeout" = Option<u64>, Query)),
    responses((status = 202, description = "queued", body = Accepted), (status = 200, description = "finished (wait=true)", body = JobResult), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn old_results(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &POST_DAYS_PARAMS)?;
    let job = CleanupJob::OldResults { days_old: params.days_old()? };
    submit(&state, &actor, job, "old-results", &params).await
}

#[utoipa::path(post, path = "/api/v1/admin/cleanup/orphaned", tag = "cleanup",
    params(("dry_run" = Option<bool>, Query), ("min_age" = Option<u64>, Query, description = "grace period in seconds"),
           ("wait" = Option<bool>, Query), ("timeout" = Option<u64>, Query)),
    responses((status = 202, description = "queued", body = Accepted), (status = 200, description = "finished (wait=true)", body = JobResult), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn orphaned(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &POST_ORPHAN_PARAMS)?;
    let job = CleanupJob::Orphaned { min_age_secs: params.min_age(state.min_grace)? };
    submit(&state, &actor, job, "orphaned", &params).await
}

#[utoipa::path(post, path = "/api/v1/admin/cleanup/all", tag = "cleanup",
    params(("days_old" = Option<i64>, Query), ("dry_run" = Option<bool>, Query),
           ("min_age" = Option<u64>, Query, description = "grace period in seconds"),
           ("wait" = Option<bool>, Query), ("timeout" = Option<u64>, Query)),
    responses((status = 202, description = "queued", body = Accepted), (status = 200, description = "finished (wait=true)", body = JobResult), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody), (status = 429, body = ErrorBody)))]
pub async fn all(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &POST_ALL_PARAMS)?;
    let job = CleanupJob::All { days_old: params.days_old()?, min_age_secs: params.min_age(state.min_grace)? };
    submit(&state, &actor, job, "all", &params).await
}

/// Rate limit, enqueue, and either answer 202 or wait for the result.
async fn submit(
    state: &AppState,
    actor: &Actor,
    job: CleanupJob,
    class: &str,
    params: &Params,
) -> Result<Response, ApiError> {
    let spec = JobSpec { job, dry_run: params.flag("dry_run")?, limit: None };
    let wait = params.wait()?;
    let enqueued = enqueue(state, &actor.0, &spec, class).await?;
    let job_id = enqueued.job_id;
    let mut response = match wait {
        Some(timeout) => match state.producer.wait(job_id, timeout).await {
            Ok(record) => {
                let result = record.result.clone().unwrap_or_else(|| result_json(&record));
                (StatusCode::OK, Json(result)).into_response()
            }
            Err(janitor_workers::producer::ProducerError::Timeout { status, .. }) => {
                accepted(job_id, &status, enqueued.deduplicated)
            }
            Err(err) => return Err(ApiError::Internal(err.into())),
        },
        None => accepted(job_id, "queued", enqueued.deduplicated),
    };
    response.extensions_mut().insert(JobCreated(job_id));
    Ok(response)
}

/// Takes from the actor's rate limit of the job's class and puts the job on
/// the queue, recorded as requested by the actor: the one way a cleanup is
/// enqueued over HTTP, for the API and the console's plans alike.
pub(crate) async fn enqueue(state: &AppState, actor: &str, spec: &JobSpec, class: &str) -> Result<Enqueued, ApiError> {
    state.limits.check(actor, class).map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    state.producer.enqueue(spec, Some(actor)).await.map_err(|e| ApiError::Unavailable(e.to_string()))
}

/// The 202 of a job put on the queue (the `Accepted` schema).
pub(super) fn accepted(job_id: Uuid, status: &str, deduplicated: bool) -> Response {
    let body = json!({
        "job_id": job_id,
        "status": status,
        "status_url": format!("/api/v1/admin/cleanup/jobs/{job_id}"),
        "deduplicated": deduplicated,
    });
    (StatusCode::ACCEPTED, Json(body)).into_response()
}

#[utoipa::path(get, path = "/api/v1/admin/cleanup/stats", tag = "cleanup", responses((status = 200, body = Stats), (status = 401, body = ErrorBody)))]
pub async fn stats(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    state.limits.check(&actor.0, "read").map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let stats = janitor_workers::jobs::stats::collect(&state.pool).await?;
    Ok(Json(stats).into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/cleanup/jobs/{job_id}", tag = "jobs",
    params(("job_id" = Uuid, Path)), responses((status = 200, body = JobResult), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn job(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    Path(job_id): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse(query.as_deref(), &[])?;
    let job_id: Uuid = job_id.parse().map_err(|_| ApiError::invalid("job_id", "must be a UUID"))?;
    state.limits.check(&actor.0, "read").map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let record = results::get(&state.pool, job_id).await?.ok_or(ApiError::NotFound)?;
    let result = record.result.clone().unwrap_or_else(|| result_json(&record));
    Ok(Json(result).into_response())
}

#[utoipa::path(get, path = "/api/v1/admin/cleanup/jobs", tag = "jobs",
    params(("operation" = Option<String>, Query), ("status" = Option<String>, Query), ("limit" = Option<i64>, Query, description = "1 to 500, default 50"),
           ("before" = Option<String>, Query, description = "the previous page's next_before (or an RFC 3339 time)")),
    responses((status = 200, body = JobList), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
pub async fn jobs(
    State(state): State<AppState>,
    Extension(actor): Extension<Actor>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(query.as_deref(), &["operation", "status", "limit", "before"])?;
    let limit = match params.get("limit") {
        None => 50,
        Some(raw) => raw
            .parse::<i64>()
            .ok()
            .filter(|n| (1..=500).contains(n))
            .ok_or_else(|| ApiError::invalid("limit", "must be an integer from 1 to 500"))?,
    };
    let before = match params.get("before") {
        None => None,
        Some(raw) => Some(
            results::parse_cursor(raw)
                .ok_or_else(|| ApiError::invalid("before", "must be a next_before cursor or an RFC 3339 time"))?,
        ),
    };
    if let Some(status) = params.get("status") {
        if !["queued", "running", "completed", "failed", "skipped", "cancelled"].contains(&status) {
            return Err(ApiError::invalid(
                "status",
                "must be queued, running, completed, failed, skipped or cancelled",
            ));
        }
    }
    state.limits.check(&actor.0, "read").map_err(|retry_after| ApiError::RateLimited { retry_after })?;
    let filter = ListFilter {
        operation: params.get("operation").map(str::to_owned),
        status: params.get("status").map(str::to_owned),
        requested_by: None,
        before,
        limit,
    };
    let records = results::list(&state.pool, &filter).await?;
    let next_before = (records.len() as i64 == limit).then(|| records.last().map(results::cursor)).flatten();
    let jobs: Vec<_> = records.iter().map(|r| r.result.clone().unwrap_or_else(|| result_json(r))).collect();
    Ok(Json(json!({ "jobs": jobs, "next_before": next_before })).into_response())
}
