//! Human-readable renderings of results and stats. `--json` bypasses these.

use std::fmt::Write as _;

use janitor_workers::jobs::stats::Stats;
use serde_json::Value;

/// A readable summary of one result object.
pub fn result(result: &Value) -> String {
    let mut out = String::new();
    let text = |key: &str| result.get(key).and_then(Value::as_str).unwrap_or("-").to_owned();
    let dry = if result["dry_run"].as_bool() == Some(true) { " (dry run: nothing was changed)" } else { "" };
    let _ = writeln!(out, "{} {}{dry}", text("operation"), text("status"));
    let _ = writeln!(out, "  job id:   {}", text("job_id"));
    if let Some(session) = result.get("session_id").and_then(Value::as_str) {
        let _ = writeln!(out, "  session:  {session}");
    }
    if let Some(cutoff) = result.get("cutoff_date").and_then(Value::as_str) {
        let _ = writeln!(out, "  cutoff:   {cutoff}");
    }
    counters(&mut out, "", result);
    for phase in ["expired_images", "old_task_results", "orphaned_files"] {
        if let Some(nested) = result.get(phase) {
            let _ = writeln!(out, "  {phase}:");
            counters(&mut out, "  ", nested);
        }
    }
    if let Some(pruned) = result.get("pruned").and_then(Value::as_object) {
        let _ = writeln!(out, "  {}:", if dry.is_empty() { "removed" } else { "would remove" });
        for (kind, count) in pruned {
            let _ = writeln!(out, "    {kind}: {count}");
        }
    }
    if let Some(reason) = result.get("last_error").and_then(Value::as_str) {
        let _ = writeln!(out, "  failed:   {reason}");
    }
    errors(&mut out, result);
    out
}

fn counters(out: &mut String, indent: &str, result: &Value) {
    let n = |key: &str| result.get(key).and_then(Value::as_i64).unwrap_or(0);
    let mb = result.get("deleted_size_mb").and_then(Value::as_f64).unwrap_or(0.0);
    let verb = if result["dry_run"].as_bool() == Some(true) { "would delete" } else { "deleted" };
    let _ = writeln!(out, "{indent}  {verb}: {} ({mb:.2} MB)", n("deleted_count"));
    let _ = writeln!(out, "{indent}  skipped (in use): {}", n("skipped_count"));
    let _ = writeln!(out, "{indent}  errors: {}", n("error_count"));
    if let Some(scanned) = result.get("files_scanned").and_then(Value::as_u64) {
        let _ = writeln!(out, "{indent}  files scanned: {scanned}");
    }
}

fn errors(out: &mut String, result: &Value) {
    let Some(items) = result.get("errors").and_then(Value::as_array) else {
        return;
    };
    if items.is_empty() {
        return;
    }
    let total = result.get("error_count").and_then(Value::as_i64).unwrap_or(items.len() as i64);
    let _ = writeln!(out, "  error items ({} of {total} shown):", items.len());
    for item in items {
        let path = item.get("path").and_then(Value::as_str).unwrap_or("?");
        let error = item.get("error").and_then(Value::as_str).unwrap_or("?");
        match item.get("image_id").and_then(Value::as_i64) {
            Some(id) => {
                let _ = writeln!(out, "    - {path} (image {id}): {error}");
            }
            None => {
                let _ = writeln!(out, "    - {path}: {error}");
            }
        }
    }
}

/// One line per job, newest first.
pub fn table(results: &[Value]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<36}  {:<24}  {:<9}  {:>8}  {:>7}  {:>6}  {:<24}",
        "JOB ID", "OPERATION", "STATUS", "DELETED", "SKIPPED", "ERRORS", "CREATED"
    );
    for r in results {
        let s = |key: &str| r.get(key).and_then(Value::as_str).unwrap_or("-").to_owned();
        let n = |key: &str| r.get(key).and_then(Value::as_i64).unwrap_or(0);
        let dry = if r["dry_run"].as_bool() == Some(true) { "*" } else { "" };
        let _ = writeln!(
            out,
            "{:<36}  {:<24}  {:<9}  {:>8}  {:>7}  {:>6}  {:<24}",
            s("job_id"),
            format!("{}{dry}", s("operation")),
            s("status"),
            n("deleted_count"),
            n("skipped_count"),
            n("error_count"),
            s("created_at")
        );
    }
    if results.iter().any(|r| r["dry_run"].as_bool() == Some(true)) {
        let _ = writeln!(out, "(* dry run)");
    }
    out
}

pub fn stats(stats: &Stats) -> String {
    let mb = janitor_workers::progress::megabytes;
    let mut out = String::new();
    let _ = writeln!(out, "cleanup statistics at {}", stats.last_checked.to_rfc3339());
    let _ = writeln!(
        out,
        "  expired temporary images: {} ({:.2} MB), {} of them in use",
        stats.expired_images,
        mb(stats.expired_images_bytes),
        stats.expired_images_in_use
    );
    let _ = writeln!(
        out,
        "  temporary images:         {} ({:.2} MB)",
        stats.temporary_images,
        mb(stats.temporary_images_bytes)
    );
    let _ = writeln!(
        out,
        "  task results > 30 days:   {} ({:.2} MB)",
        stats.old_task_results_30d,
        mb(stats.old_task_results_30d_bytes)
    );
    let _ =
        writeln!(out, "  all images:               {} ({:.2} MB)", stats.total_images, mb(stats.total_images_bytes));
    let _ = writeln!(out, "  reclaimable:              {:.2} MB", stats.reclaimable_mb);
    out
}
