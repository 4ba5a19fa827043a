//! I6: each deleted row was one its job selects, judged at the moment of
//! the deletion (the trigger recorded the tasks that referenced the image
//! then) and from the simulator's record of the row.
//!
//! - Old results (`old-results`, `all`'s second phase): some task that
//!   finished before the job's cutoff had the image as its result, and no
//!   task that finished after the cutoff shares it, in any column. (An
//!   active task sharing it is already an I1 violation.)
//! - Expired (`expired`, `all`'s first phase): a temporary image whose
//!   `expires_at` is before the job's reference time.
//! - Session: an image of that session.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;

use super::{Report, I6};
use crate::facts::{Facts, Job};
use crate::model::{active, Model};

pub fn check(facts: &Facts, model: &Model, report: &mut Report) {
    for (image, deletion) in &facts.deletions {
        let Some((job, phase)) = facts.deleted_by(*image) else { continue };
        let Some(job) = facts.jobs.get(&job) else { continue };
        let Some(record) = model.images.get(image) else { continue };
        let what = format!(
            "{} phase {phase} deleted image {image} ({}, stored {:?})",
            job.describe(),
            record.kind,
            record.stored
        );
        let problem = match (job.operation.as_str(), phase) {
            ("cleanup_old_results", 0) | ("cleanup_all", 1) => match old_result(job, &deletion.users) {
                Some((problem, tasks)) if changed_during(job, &tasks, model) => {
                    report.notes.push(format!(
                        "{what}, but {problem}; tasks {:?} changed while the job ran, so it may have qualified when claimed",
                        tasks.0
                    ));
                    None
                }
                problem => problem.map(|(problem, _)| problem),
            },
            ("cleanup_expired_images", 0) | ("cleanup_all", 0) => match (record.expires_at, job.as_of) {
                (Some(expires), Some(as_of)) if expires < as_of => None,
                (expires, as_of) => {
                    Some(format!("it was not a temporary image expired before {as_of:?} (expires_at {expires:?})"))
                }
            },
            ("cleanup_session", 0) => {
                let session = job.params["session_id"].as_str();
                (record.session.as_deref() != session)
                    .then(|| format!("it belongs to session {:?}, not {session:?}", record.session))
            }
            _ => None,
        };
        if let Some(problem) = problem {
            report.add(I6, format!("{what}, but {problem}; tasks referencing it then: {}", deletion.users));
        }
    }
}

/// Whether the judgement is uncertain: the tasks it rests on (`any` of
/// them, or all) were changed by the simulator after the job's reference
/// time (less a second for the clocks), so the job may have claimed the
/// image while it still qualified.
fn changed_during(job: &Job, (tasks, any): &(Vec<i64>, bool), model: &Model) -> bool {
    let Some(as_of) = job.as_of else { return true };
    let changed = |task: &i64| model.tasks.get(task).is_none_or(|t| t.changed_at >= as_of - Duration::seconds(1));
    if *any {
        tasks.iter().any(changed)
    } else {
        tasks.iter().all(changed)
    }
}

/// Why an old-results deletion was wrong, if it was, with the tasks whose
/// state the judgement rests on: all of them must have been so for the
/// whole job (no old result), or any one of them (a newer sharer).
fn old_result(job: &Job, users: &Value) -> Option<(String, (Vec<i64>, bool))> {
    let as_of = job.as_of?;
    let days = job.params["days_old"].as_i64().unwrap_or(30);
    let cutoff = as_of - Duration::days(days);
    let users = users.as_array().cloned().unwrap_or_default();
    let finished_at = |user: &Value| user["completed_at"].as_str().and_then(|t| t.parse::<DateTime<Utc>>().ok());
    let task = |user: &Value| user["task"].as_i64().unwrap_or_default();
    let old_result = users.iter().any(|user| {
        matches!(user["status"].as_str(), Some("completed" | "failed"))
            && finished_at(user).is_some_and(|at| at < cutoff)
            && user["columns"].as_array().is_some_and(|c| c.iter().any(|c| c == "result_image_id"))
    });
    if !old_result {
        let problem = format!("no task that finished before the cutoff {cutoff} had it as its result");
        return Some((problem, (users.iter().map(task).collect(), true)));
    }
    let newer: Vec<&Value> = users
        .iter()
        .filter(|user| {
            !active(user["status"].as_str().unwrap_or_default()) && finished_at(user).is_none_or(|at| at >= cutoff)
        })
        .collect();
    let shown: Vec<String> = newer
        .iter()
        .map(|user| {
            format!(
                "task {} ({}, completed_at {}, {})",
                user["task"], user["status"], user["completed_at"], user["columns"]
            )
        })
        .collect();
    (!newer.is_empty()).then(|| {
        let tasks = newer.iter().map(|u| task(u)).collect();
        (format!("tasks that finished after the cutoff {cutoff} share it: {}", shown.join("; ")), (tasks, false))
    })
}
