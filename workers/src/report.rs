//! The result JSON: the shape the application's original cleanup endpoints
//! returned (`operation`, `deleted_count`, `deleted_size_bytes`,
//! `deleted_size_mb`, `errors`, `dry_run`, ...), built from a job's row so
//! that a running job and a finished one read the same way. A dry run adds
//! `sample` (see [`crate::sample`]).

use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde_json::{json, Map, Value};

use crate::job::ALL_PHASES as PHASE_OPERATIONS;
use crate::progress::{megabytes, Checkpoint, Counters, ErrorItem};
use crate::record::JobRecord;
use crate::sample::Sample;

/// The seed-compatible result object for one job.
pub fn result_json(record: &JobRecord) -> Value {
    let checkpoint: Option<Checkpoint> = record.checkpoint.clone().and_then(|value| serde_json::from_value(value).ok());
    let errors: Vec<ErrorItem> = serde_json::from_value(record.errors.clone()).unwrap_or_default();
    let totals = Counters {
        deleted: record.deleted_count,
        bytes: record.deleted_bytes,
        skipped: record.skipped_count,
        errors: record.error_count,
    };

    let mut out = Map::new();
    out.insert("job_id".into(), json!(record.job_id));
    out.insert("operation".into(), json!(record.operation));
    out.insert("status".into(), json!(record.status));
    out.insert("dry_run".into(), json!(record.dry_run));
    counters_into(&mut out, totals, &errors);
    out.insert("started_at".into(), json!(record.started_at.map(rfc3339)));
    out.insert("finished_at".into(), json!(record.finished_at.map(rfc3339)));
    out.insert("created_at".into(), json!(rfc3339(record.created_at)));
    out.insert("updated_at".into(), json!(rfc3339(record.updated_at)));
    out.insert("attempts".into(), json!(record.attempts));
    out.insert("worker".into(), json!(record.worker));
    out.insert("requested_by".into(), json!(record.requested_by));
    out.insert("last_error".into(), json!(record.last_error));
    if let Value::Object(params) = &record.params {
        for (key, value) in params {
            out.insert(key.clone(), value.clone());
        }
    }
    if let Some(checkpoint) = &checkpoint {
        add_checkpoint_fields(&mut out, record, checkpoint, &errors);
    }
    Value::Object(out)
}

fn add_checkpoint_fields(
    out: &mut Map<String, Value>,
    record: &JobRecord,
    checkpoint: &Checkpoint,
    errors: &[ErrorItem],
) {
    if let Some(days) = record.params.get("days_old").and_then(Value::as_i64) {
        out.insert("cutoff_date".into(), json!(rfc3339(checkpoint.as_of - Duration::days(days))));
    }
    if record.operation == "cleanup_orphaned_files" || record.operation == "cleanup_all" {
        out.insert("files_scanned".into(), json!(checkpoint.files_scanned));
    }
    let mut saved = serde_json::to_value(checkpoint).unwrap_or(Value::Null);
    // A dry run's sample is part of its answer, not of where it stands: it
    // is shown once, as `sample`, even when empty, by the operations that
    // keep one (not the trash purge or the prune).
    let sample = saved.as_object_mut().and_then(|saved| saved.remove("sample"));
    if record.dry_run && !matches!(record.operation.as_str(), "cleanup_trash" | "prune_records") {
        let empty = || serde_json::to_value(Sample::default()).unwrap_or(Value::Null);
        out.insert("sample".into(), sample.unwrap_or_else(empty));
    }
    out.insert("checkpoint".into(), saved);
    if record.operation == "prune_records" {
        out.insert("pruned".into(), pruned_json(checkpoint));
    }
    if record.operation != "cleanup_all" {
        return;
    }
    // `cleanup_all` nests each phase's own result, plus the totals.
    let names = ["expired_images", "old_task_results", "orphaned_files"];
    for ((name, operation), counters) in names.iter().zip(PHASE_OPERATIONS).zip(&checkpoint.phases) {
        let mut phase = Map::new();
        phase.insert("operation".into(), json!(operation));
        phase.insert("dry_run".into(), json!(record.dry_run));
        let own: Vec<ErrorItem> = errors.iter().filter(|e| e.operation == operation).cloned().collect();
        counters_into(&mut phase, *counters, &own);
        if operation == "cleanup_old_results" {
            phase.insert("cutoff_date".into(), out.get("cutoff_date").cloned().unwrap_or(Value::Null));
        }
        if operation == "cleanup_orphaned_files" {
            phase.insert("files_scanned".into(), json!(checkpoint.files_scanned));
        }
        out.insert((*name).into(), Value::Object(phase));
    }
    let mut totals = Map::new();
    let total = Counters {
        deleted: record.deleted_count,
        bytes: record.deleted_bytes,
        skipped: record.skipped_count,
        errors: record.error_count,
    };
    counters_into(&mut totals, total, &[]);
    totals.remove("errors");
    out.insert("totals".into(), Value::Object(totals));
}

fn counters_into(out: &mut Map<String, Value>, counters: Counters, errors: &[ErrorItem]) {
    out.insert("deleted_count".into(), json!(counters.deleted));
    out.insert("deleted_size_bytes".into(), json!(counters.bytes));
    out.insert("deleted_size_mb".into(), json!(megabytes(counters.bytes)));
    out.insert("skipped_count".into(), json!(counters.skipped));
    out.insert("error_count".into(), json!(counters.errors));
    out.insert("errors".into(), json!(errors));
}

pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Microsecond precision, as Postgres stores it (for paging cursors).
pub fn rfc3339_micros(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

/// The counts per kind of a prune job's result: `{"job_results_session": 12, …}`.
fn pruned_json(checkpoint: &Checkpoint) -> Value {
    let counts = crate::retention::Kind::ALL
        .iter()
        .zip(&checkpoint.phases)
        .map(|(kind, c)| (kind.name().to_owned(), json!(c.deleted)));
    Value::Object(counts.collect::<Map<String, Value>>())
}
