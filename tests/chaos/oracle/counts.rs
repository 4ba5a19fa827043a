//! I4: every job's counts equal what it actually deleted.
//!
//! Rows: each committed deletion is attributed, through its transaction, to
//! the one job (and phase) whose progress that transaction saved; a row
//! phase's `deleted` and `bytes` must equal what was attributed to it, and
//! all row phases together must equal the simulator's rows that are gone.
//! Orphans: a sweep's count must equal the files in its quarantine folder
//! when it finished, and that folder must not change afterwards (except by
//! the operator's restores). Every file that left the store must have been
//! taken by some job.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use super::{Report, H, I4};
use crate::facts::{Count, Facts, Job};
use crate::model::{Model, TrashSnapshot};
use crate::world::WORKER_APP;

pub fn check(facts: &Facts, model: &Model, report: &mut Report) {
    rows(facts, model, report);
    orphans(facts, model, report);
    explained(facts, model, report);
}

fn rows(facts: &Facts, model: &Model, report: &mut Report) {
    let mut attributed: BTreeMap<(Uuid, i32), Count> = BTreeMap::new();
    for (image, deletion) in &facts.deletions {
        if deletion.app != WORKER_APP {
            report.add(H, format!("image {image} was deleted by {:?}, not by a janitor worker", deletion.app));
            continue;
        }
        match facts.progress.get(&deletion.txid) {
            None => report.add(
                I4,
                format!(
                    "image {image} ({:?}) was deleted in transaction {} at {}, which saved no job's progress: no job counts it",
                    deletion.path, deletion.txid, deletion.at
                ),
            ),
            Some(saved) if saved.len() > 1 => report.add(
                I4,
                format!("image {image} was deleted in transaction {} that saved the progress of several jobs: {saved:?}", deletion.txid),
            ),
            Some(saved) => {
                let count = attributed.entry(*saved.iter().next().unwrap()).or_default();
                count.rows += 1;
                count.bytes += deletion.size;
            }
        }
    }
    let mut reported = 0;
    for job in facts.jobs.values() {
        for &phase in job.row_phases() {
            let did = attributed.remove(&(job.id, phase as i32)).unwrap_or_default();
            let said = if job.dry_run { Count::default() } else { job.phase(phase) };
            reported += said.rows;
            if did != said {
                report.add(
                    I4,
                    format!(
                        "{} phase {phase} reports {} rows ({} bytes) deleted, but its committed transactions deleted {} rows ({} bytes)",
                        job.describe(),
                        said.rows,
                        said.bytes,
                        did.rows,
                        did.bytes
                    ),
                );
            }
        }
    }
    for ((job, phase), did) in attributed {
        let what = facts.jobs.get(&job).map(|j| j.describe()).unwrap_or_else(|| format!("job {job}"));
        report.add(I4, format!("{what} deleted {} rows in phase {phase}, which is not a row phase of it", did.rows));
    }
    let vanished = model.images.keys().filter(|id| !facts.images.contains_key(id)).count() as i64;
    if reported != vanished {
        report.add(
            I4,
            format!("the row-deleting jobs report {reported} deleted rows in all, but {vanished} of the simulator's rows are gone"),
        );
    }
    report.summary.push(format!("rows: {vanished} deleted, {reported} counted by jobs"));
    report.coverage.0 = vanished;
}

fn orphans(facts: &Facts, model: &Model, report: &mut Report) {
    let mut restored: BTreeMap<Uuid, BTreeSet<String>> = BTreeMap::new();
    for restore in &model.restores {
        restored.entry(restore.job).or_default().extend(restore.moved.iter().cloned());
    }
    let (mut counted, mut quarantined) = (0, 0);
    for job in facts.jobs.values() {
        if let Some(phase) = job.orphan_phase() {
            let Some(snapshot) = model.snapshots.get(&job.id) else {
                report.add(H, format!("{} has no snapshot of its quarantine folder", job.describe()));
                continue;
            };
            let said = if job.dry_run { 0 } else { job.phase(phase).rows };
            counted += said;
            quarantined += snapshot.files.len() as i64;
            let none = BTreeSet::new();
            sweep(facts, job, said, snapshot, restored.get(&job.id).unwrap_or(&none), report);
        } else if job.operation == "cleanup_trash" && !job.dry_run && job.phase(0).rows != 0 {
            report.add(
                I4,
                format!(
                    "{} purged {} quarantined files, but no quarantine is older than its 7-day retention",
                    job.describe(),
                    job.phase(0).rows
                ),
            );
        }
    }
    for (folder, files) in &facts.trash {
        let sweep = folder.parse::<Uuid>().ok().and_then(|id| facts.jobs.get(&id)).and_then(|j| j.orphan_phase());
        if sweep.is_none() {
            report.add(I4, format!("quarantine folder {folder:?} belongs to no sweep; it holds {}", list(files)));
        }
    }
    // Exit 3 is a restore that left files whose path is taken again (the
    // replanted symlinked folders); anything else is worth a look.
    for restore in model.restores.iter().filter(|r| !r.output.starts_with("exit 0") && !r.output.starts_with("exit 3"))
    {
        report.notes.push(format!("janitor restore {} did not succeed: {}", restore.job, restore.output));
    }
    report.coverage.1 = quarantined;
    let restores: usize = model.restores.iter().map(|r| r.moved.len()).sum();
    report.summary.push(format!(
        "orphans: {counted} counted by sweeps, {quarantined} found in their quarantine folders, {restores} restored by the operator"
    ));
}

/// One sweep: its count is the files its quarantine folder held when it
/// finished, and the folder changed since only by the operator's restores.
fn sweep(
    facts: &Facts,
    job: &Job,
    said: i64,
    snapshot: &TrashSnapshot,
    restored: &BTreeSet<String>,
    report: &mut Report,
) {
    if snapshot.files.len() as i64 != said {
        report.add(
            I4,
            format!(
                "{} reports {said} orphans deleted, but its quarantine folder held {} files when it finished: {}",
                job.describe(),
                snapshot.files.len(),
                list(&snapshot.files)
            ),
        );
    }
    let now = facts.trash.get(&job.id.to_string()).cloned().unwrap_or_default();
    let expected: BTreeSet<String> = snapshot.files.difference(restored).cloned().collect();
    if now != expected {
        let appeared: BTreeSet<String> = now.difference(&expected).cloned().collect();
        let vanished: BTreeSet<String> = expected.difference(&now).cloned().collect();
        report.add(
            I4,
            format!(
                "the quarantine folder of {} changed after it finished (at {}): appeared {}, vanished {}",
                job.describe(),
                snapshot.at,
                list(&appeared),
                list(&vanished)
            ),
        );
    }
}

/// Every file the simulator put in the store that is gone was taken by a
/// sweep (it is in some sweep's quarantine) or with its row. (A live row's
/// lost file is judged by I5.)
fn explained(facts: &Facts, model: &Model, report: &mut Report) {
    let named = facts.named_paths();
    let swept: BTreeSet<&String> = model.snapshots.values().flat_map(|s| s.files.iter()).collect();
    let with_rows: BTreeSet<&String> = model
        .images
        .iter()
        .filter(|(id, _)| !facts.images.contains_key(id))
        .filter_map(|(_, image)| image.place.as_ref())
        .collect();
    for (path, file) in &model.files {
        if !facts.store.contains(path)
            && !swept.contains(path)
            && !with_rows.contains(path)
            && !named.contains_key(path)
        {
            report.add(
                I4,
                format!(
                    "{path} ({}) left the store, but no sweep's quarantine holds it and no deleted row names it",
                    file.kind
                ),
            );
        }
    }
}

fn list(files: &BTreeSet<String>) -> String {
    let shown: Vec<&str> = files.iter().take(8).map(String::as_str).collect();
    if files.len() > shown.len() {
        format!("[{}, … {} more]", shown.join(", "), files.len() - shown.len())
    } else {
        format!("[{}]", shown.join(", "))
    }
}
