//! The POSTs of "Plan a cleanup": `POST /plan` enqueues an operation as a
//! dry run, `POST /plan/{id}/run` enqueues the same operation with the same
//! parameters for real. Both go through [`cleanup::enqueue`], the function
//! behind the API's cleanup endpoints (the same rate limit per operation,
//! the same producer, the job recorded as requested by the token's name).
//!
//! Each one, like the other actions: needs a session (else 303 to
//! `/login`), the session's CSRF token (else 403), a session that is not
//! read-only (else 403); and is one audit row under the token's name,
//! whatever its outcome, with the operation and parameters it asked for.
//! Bad input answers the form again with the field's error (422), with
//! nothing enqueued.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{OriginalUri, Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use janitor_workers::{CleanupJob, DaysOld, JobSpec, SessionId};
use serde_json::json;
use uuid::Uuid;

use super::pages::plan;
use super::session::Session;
use super::{forbidden, form_field, layout, refusal, see_other, Remote};
use crate::http::audit::{self as trail, Entry};
use crate::http::cleanup;
use crate::http::error::ApiError;
use crate::http::AppState;

/// The plan form's fields as typed, kept to fill the form in again after a
/// refusal.
#[derive(Debug, Clone)]
pub struct PlanForm {
    pub operation: String,
    pub session_id: String,
    pub days_old: String,
    pub min_age: String,
    pub limit: String,
}

impl Default for PlanForm {
    fn default() -> Self {
        Self {
            operation: "expired".to_owned(),
            session_id: String::new(),
            days_old: janitor_workers::job::DEFAULT_DAYS_OLD.to_string(),
            min_age: "1h".to_owned(),
            limit: String::new(),
        }
    }
}

impl PlanForm {
    fn parse(body: &[u8]) -> Self {
        let field = |name| form_field(body, name).unwrap_or_default().trim().to_owned();
        Self {
            operation: field("operation"),
            session_id: field("session_id"),
            days_old: field("days_old"),
            min_age: field("min_age"),
            limit: field("limit"),
        }
    }

    /// The dry run the form asks for, checked as the API and the command
    /// line check theirs; a refusal names its field. Fields the operation
    /// does not take are ignored.
    pub fn spec(&self, min_grace: Duration) -> Result<JobSpec, ApiError> {
        let job = match self.operation.as_str() {
            "expired" => CleanupJob::Expired,
            "session" => CleanupJob::Session {
                session_id: SessionId::parse(&self.session_id)
                    .map_err(|e| ApiError::invalid("session_id", e.to_string()))?,
            },
            "old-results" => CleanupJob::OldResults { days_old: self.days_old()? },
            "orphaned" => CleanupJob::Orphaned { min_age_secs: self.min_age(min_grace)? },
            "all" => CleanupJob::All { days_old: self.days_old()?, min_age_secs: self.min_age(min_grace)? },
            _ => return Err(ApiError::invalid("operation", "must be expired, session, old-results, orphaned or all")),
        };
        let limit = match self.limit.as_str() {
            "" => None,
            raw => Some(raw.parse::<u64>().ok().filter(|n| (1..=MAX_LIMIT).contains(n)).ok_or_else(|| {
                ApiError::invalid("limit", format!("must be empty or an integer from 1 to {MAX_LIMIT}"))
            })?),
        };
        Ok(JobSpec { job, dry_run: true, limit })
    }

    fn days_old(&self) -> Result<DaysOld, ApiError> {
        let message = "must be an integer from 1 to 36500";
        let days: i64 = self.days_old.parse().map_err(|_| ApiError::invalid("days_old", message))?;
        DaysOld::new(days).map_err(|_| ApiError::invalid("days_old", message))
    }

    /// A grace period such as `90m`, `1h`, `2d` or seconds, from the
    /// `--min-grace` floor to 3650 days.
    fn min_age(&self, floor: Duration) -> Result<u64, ApiError> {
        let message = format!(
            "must be a duration from {} (the minimum grace period) to 3650d, such as 1h, 90m or 2d",
            humantime::format_duration(floor)
        );
        let secs = crate::input::parse_duration(&self.min_age)
            .map_err(|_| ApiError::invalid("min_age", message.clone()))?
            .as_secs();
        if secs < floor.as_secs() || janitor_workers::job::check_min_age(secs).is_err() {
            return Err(ApiError::invalid("min_age", message));
        }
        Ok(secs)
    }
}

/// The largest `limit` the form takes: far beyond any store, well inside
/// the types.
const MAX_LIMIT: u64 = 1_000_000_000;

/// The rate-limit class of a cleanup, as the API's endpoint names it; `None`
/// for jobs that are not planned here (purge-trash, prune).
pub fn class(job: &CleanupJob) -> Option<&'static str> {
    match job {
        CleanupJob::Expired => Some("expired"),
        CleanupJob::Session { .. } => Some("session"),
        CleanupJob::OldResults { .. } => Some("old-results"),
        CleanupJob::Orphaned { .. } => Some("orphaned"),
        CleanupJob::All { .. } => Some("all"),
        CleanupJob::PurgeTrash { .. } | CleanupJob::Prune { .. } => None,
    }
}

/// One request's audit row: the token's name, the path, what was asked.
struct Audit<'a> {
    state: &'a AppState,
    session: &'a Session,
    path: String,
    remote: Remote,
}

impl Audit<'_> {
    async fn write(&self, status: u16, job_id: Option<Uuid>, asked: serde_json::Value) {
        let mut params = json!({ "via": "console" });
        if let (Some(params), serde_json::Value::Object(asked)) = (params.as_object_mut(), asked) {
            params.extend(asked);
        }
        let entry = Entry {
            actor: Some(self.session.name.clone()),
            method: "POST".to_owned(),
            path: self.path.clone(),
            params,
            remote: self.remote.audited.clone(),
        };
        trail::record(&self.state.pool, &entry, status, job_id).await;
    }

    /// The CSRF and read-only checks; `Err` is the refusal, audited.
    async fn admit(&self, body: &[u8]) -> Result<(), Response> {
        let Some(why) = refusal(self.session, body) else {
            return Ok(());
        };
        self.write(403, None, json!({})).await;
        Err(forbidden(self.session, &why))
    }
}

/// `POST /plan`: the form's operation as a dry run, then its result page.
pub async fn plan(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    remote: Remote,
    body: Bytes,
) -> Response {
    let audit = Audit { state: &state, session: &session, path: uri.path().to_owned(), remote };
    if let Err(refused) = audit.admit(&body).await {
        return refused;
    }
    let form = PlanForm::parse(&body);
    let spec = match form.spec(state.min_grace) {
        Ok(spec) => spec,
        Err(err) => {
            let asked = json!({ "operation": form.operation });
            audit.write(err.status().as_u16(), None, asked).await;
            return plan::form_page(&session, &form, Some(&err), StatusCode::UNPROCESSABLE_ENTITY);
        }
    };
    let asked = json!({ "operation": spec.job.operation(), "params": spec.params(), "dry_run": true });
    let class = class(&spec.job).unwrap_or("all");
    match cleanup::enqueue(&state, &session.name, &spec, class).await {
        Ok(enqueued) => {
            audit.write(303, Some(enqueued.job_id), asked).await;
            see_other(&format!("/plan/{}", enqueued.job_id))
        }
        Err(err) => {
            audit.write(err.status().as_u16(), None, asked).await;
            layout::error(&session, err)
        }
    }
}

/// `POST /plan/{id}/run`: the completed dry run's operation and parameters
/// again, for real, then the new job's page.
pub async fn run(
    State(state): State<AppState>,
    session: Session,
    OriginalUri(uri): OriginalUri,
    remote: Remote,
    Path(raw): Path<String>,
    body: Bytes,
) -> Response {
    let audit = Audit { state: &state, session: &session, path: uri.path().to_owned(), remote };
    if let Err(refused) = audit.admit(&body).await {
        return refused;
    }
    let plan_id = raw.parse::<Uuid>().ok();
    let asked = json!({ "plan": plan_id, "dry_run": false });
    let outcome = async {
        let spec = plan::real_run(&state, plan_id.ok_or(ApiError::NotFound)?).await?;
        let class = class(&spec.job).unwrap_or("all");
        cleanup::enqueue(&state, &session.name, &spec, class).await
    };
    match outcome.await {
        Ok(enqueued) => {
            audit.write(303, Some(enqueued.job_id), asked).await;
            see_other(&format!("/jobs/{}", enqueued.job_id))
        }
        Err(err) => {
            audit.write(err.status().as_u16(), plan_id, asked).await;
            layout::error(&session, err)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(operation: &str) -> PlanForm {
        PlanForm { operation: operation.to_owned(), ..PlanForm::default() }
    }

    fn field(result: Result<JobSpec, ApiError>) -> String {
        match result {
            Err(ApiError::Invalid { field, .. }) => field,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn every_refusal_names_its_field_and_good_input_is_a_dry_run() {
        let grace = Duration::from_secs(600);
        for days in ["0", "-3", "36501", "ten", "99999999999999999999"] {
            let bad = PlanForm { days_old: days.to_owned(), ..form("old-results") };
            assert_eq!(field(bad.spec(grace)), "days_old", "{days}");
        }
        for age in ["5m", "nonsense", "3651d", "-1"] {
            let bad = PlanForm { min_age: age.to_owned(), ..form("all") };
            assert_eq!(field(bad.spec(grace)), "min_age", "{age}");
        }
        assert_eq!(field(form("session").spec(grace)), "session_id");
        assert_eq!(field(PlanForm { session_id: "a\nb".into(), ..form("session") }.spec(grace)), "session_id");
        assert_eq!(field(form("prune").spec(grace)), "operation");
        assert_eq!(field(PlanForm { limit: "0".into(), ..form("expired") }.spec(grace)), "limit");

        let good = PlanForm { min_age: "2h".into(), limit: "7".into(), ..form("orphaned") }.spec(grace).unwrap();
        assert_eq!(good, JobSpec { job: CleanupJob::Orphaned { min_age_secs: 7200 }, dry_run: true, limit: Some(7) });
        // A field another operation takes is not checked.
        let expired = PlanForm { days_old: "-1".into(), ..form("expired") }.spec(grace).unwrap();
        assert_eq!(expired.job, CleanupJob::Expired);
    }
}
