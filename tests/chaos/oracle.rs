//! The invariants, checked once the queue has drained, against the
//! simulator's own record of what it committed (never against janitor's
//! reports). Each violation names the ids, paths, statuses and jobs
//! involved.
//!
//! - I1: an image that a pending or processing task uses keeps its row and
//!   its file.
//! - I2: nothing outside the storage root changes.
//! - I3: once its job has finished, a deleted row's file is gone.
//! - I4: every job's counts equal what it deleted; every job finishes.
//! - I5: a live row keeps its file (no sweep takes a file whose row came
//!   within the grace period; deleting one row does not take another's file).
//! - I6: a job deletes only rows it selects (old results: no newer or active
//!   task shares the image; expired: past `expires_at`; session: that session).
//! - W: workers exit only when told to, and promptly when told to.
//! - H: the harness's own assumptions (a broken one makes the run meaningless).

mod counts;
mod selection;

use std::collections::BTreeMap;

use crate::facts::Facts;
use chrono::{DateTime, Utc};

use crate::model::{active, ImageRec, Model};
use crate::world::{World, MIN_AGE};

pub const I1: &str = "I1 an image in use keeps its row and its file";
pub const I2: &str = "I2 nothing outside the storage root changes";
pub const I3: &str = "I3 a deleted row's file is gone once its job has finished";
pub const I4: &str = "I4 counts equal what was deleted; no job stuck";
pub const I5: &str = "I5 a live row keeps its file";
pub const I6: &str = "I6 a job deletes only what it selects";
pub const W: &str = "W workers exit only when told to, and promptly";
pub const H: &str = "H the harness's assumptions";

const COLUMNS: [&str; 4] = ["husband_photo_id", "wife_photo_id", "template_id", "result_image_id"];

#[derive(Debug, Default)]
pub struct Report {
    pub violations: BTreeMap<&'static str, Vec<String>>,
    /// Findings that are allowed (documented limits), shown for judgement.
    pub notes: Vec<String>,
    pub summary: Vec<String>,
    /// Rows deleted and orphans quarantined so far: a run in which either
    /// stays zero exercised nothing (jobs refused, settings renamed).
    pub coverage: (i64, i64),
}

impl Report {
    pub fn add(&mut self, invariant: &'static str, text: String) {
        self.violations.entry(invariant).or_default().push(text);
    }

    /// Turns the violations of the invariants the run leaves out (`I6` in
    /// `JANITOR_CHAOS_WITHOUT`) into notes.
    pub fn demote(&mut self, plan: &crate::plan::Plan) {
        let left_out: Vec<&'static str> =
            self.violations.keys().copied().filter(|i| !plan.does(i.split(' ').next().unwrap())).collect();
        for invariant in left_out {
            for text in self.violations.remove(invariant).unwrap_or_default() {
                self.notes.push(format!("(left out) {invariant}: {text}"));
            }
        }
    }

    pub fn is_clean(&self) -> bool {
        self.violations.is_empty()
    }

    /// The violations, at most `cap` per invariant.
    pub fn render(&self, cap: usize) -> String {
        let mut out = String::new();
        for (invariant, found) in &self.violations {
            out.push_str(&format!("\n== {invariant}: {} violation(s)\n", found.len()));
            for text in found.iter().take(cap) {
                out.push_str(&format!("  - {text}\n"));
            }
            if found.len() > cap {
                out.push_str(&format!("  … and {} more\n", found.len() - cap));
            }
        }
        out
    }
}

/// Checks every invariant; `drained` holds what the drain found (stuck jobs,
/// workers that would not stop).
pub async fn check(world: &World, drained: Vec<(&'static str, String)>) -> Report {
    let facts = Facts::read(&world.env.pool, world.env.store.root()).await.expect("the oracle reads the database");
    let mut report = Report::default();
    for (invariant, text) in drained {
        report.add(invariant, text);
    }
    for change in world.sentinel.changes() {
        report
            .add(I2, format!("outside the root, in the sentinel folder {}: {change}", world.sentinel.path().display()));
    }
    let model = world.model();
    for seen in &model.seen {
        let invariant = if seen.text.starts_with("I1") { I1 } else { W };
        match seen.image {
            Some(image) if facts.images.contains_key(&image) => {
                let place = model.images[&image].place.clone().unwrap_or_default();
                let since = seen.active_since.unwrap_or_default();
                judge_lost_file(&facts, &model, image, &place, since, seen.text.clone(), &mut report);
            }
            Some(image) => report.add(invariant, format!("{}; {}", seen.text, facts.how_deleted(image))),
            None => report.add(invariant, seen.text.clone()),
        }
    }
    in_use(&facts, &model, &mut report);
    deleted_files(&facts, &model, &mut report);
    live_files(&facts, &model, &mut report);
    counts::check(&facts, &model, &mut report);
    selection::check(&facts, &model, &mut report);
    drop(model);
    report.demote(&world.plan);
    report
}

/// I1, as the simulator committed it, and as each deleting transaction saw
/// the tasks.
fn in_use(facts: &Facts, model: &Model, report: &mut Report) {
    for (id, task) in model.tasks.iter().filter(|(_, t)| active(t.status)) {
        let Some(row) = facts.tasks.get(id) else {
            report.add(H, format!("task {id} that the simulator made is gone"));
            continue;
        };
        if row.status != task.status {
            report.add(H, format!("task {id} is {} in the database but {} in the model", row.status, task.status));
            continue;
        }
        for r in &task.refs {
            let column = COLUMNS.iter().position(|c| *c == r.column).unwrap();
            let image = &model.images[&r.image];
            let what = format!(
                "task {id} ({}, active since simulator commit #{}) uses image {} ({}, {}, stored {:?})",
                task.status, task.since, r.image, r.column, image.kind, image.stored
            );
            let now = row.columns[column];
            if now != Some(r.image) || !facts.images.contains_key(&r.image) {
                report.add(I1, format!("{what}: the column is now {now:?}; {}", facts.how_deleted(r.image)));
            } else if let Some(place) = image.place.as_ref().filter(|p| r.file_checked && !facts.store.contains(*p)) {
                let text = format!("{what}: its file {place} is gone from the store");
                judge_lost_file(facts, model, r.image, place, task.since_at, text, report);
            }
        }
    }
    for (image, deletion) in &facts.deletions {
        let users = deletion.users.as_array().cloned().unwrap_or_default();
        let busy: Vec<_> = users.iter().filter(|u| u["status"].as_str().is_some_and(active)).collect();
        if !busy.is_empty() {
            report.add(
                I1,
                format!(
                    "image {image} (stored {:?}) was deleted while the database showed active tasks using it: {}",
                    deletion.path,
                    facts.how_deleted(*image)
                ),
            );
        }
    }
}

/// Where a file went, if a sweep took it.
fn taken_by(facts: &Facts, model: &Model, place: &str) -> String {
    let swept: Vec<String> = model
        .snapshots
        .iter()
        .filter(|(_, snapshot)| snapshot.files.contains(place))
        .map(|(job, _)| facts.jobs.get(job).map(|j| j.describe()).unwrap_or_else(|| job.to_string()))
        .collect();
    if swept.is_empty() {
        String::new()
    } else {
        format!(" (taken as an orphan by {})", swept.join(", "))
    }
}

/// How long before a deletion a row or task must have committed for the
/// deleting job to have certainly seen it (statement and commit latency).
const SEEN_BEFORE: chrono::Duration = chrono::Duration::milliseconds(100);

/// Another row naming the same file that janitor deleted: (id, record, when).
fn sharer<'m>(facts: &Facts, model: &'m Model, image: i64, place: &str) -> Option<(i64, &'m ImageRec, DateTime<Utc>)> {
    model.images.iter().find_map(|(other, i)| {
        let deletion = facts.deletions.get(other).filter(|_| *other != image && i.place.as_deref() == Some(place))?;
        Some((*other, i, deletion.at))
    })
}

/// I1 for a file that vanished while an active task used it (active since
/// `since`). If it went away with another row naming the same file, that is
/// janitor's fault for sure only if the task was active before that row's
/// deletion ran; a task activated while or after it was being deleted may
/// have raced an unlink that was already decided (a note).
fn judge_lost_file(
    facts: &Facts,
    model: &Model,
    image: i64,
    place: &str,
    since: DateTime<Utc>,
    text: String,
    report: &mut Report,
) {
    let swept = taken_by(facts, model, place);
    match sharer(facts, model, image, place) {
        Some((other, i, deleted)) if swept.is_empty() => {
            let how =
                format!("{text} (unlinked with image {other}, stored {:?}: {})", i.stored, facts.how_deleted(other));
            if since + SEEN_BEFORE < deleted {
                report.add(I1, how);
            } else {
                report.notes.push(format!("{how}; the task became active as that row was being deleted"));
            }
        }
        _ => report.add(I1, format!("{text}{swept}")),
    }
}

/// I3: the simulator's rows that are gone have no file left in the store,
/// unless another live row names the same file or the operator restored it.
fn deleted_files(facts: &Facts, model: &Model, report: &mut Report) {
    let named = facts.named_paths();
    let restored = model.restored_paths();
    for (id, image) in model.images.iter().filter(|(id, _)| !facts.images.contains_key(id)) {
        let Some(place) = &image.place else { continue };
        if facts.store.contains(place) && !named.contains_key(place) && !restored.contains(place) {
            report.add(
                I3,
                format!(
                    "image {id} ({}, stored {:?}) is deleted but its file {place} is still in the store; {}",
                    image.kind,
                    image.stored,
                    facts.how_deleted(*id)
                ),
            );
        }
    }
}

/// I5: a live row whose file was there when it committed still has it. A
/// file taken by a sweep because the simulator committed its row late, or
/// unlinked with another row naming it while this one was being inserted,
/// is a note.
fn live_files(facts: &Facts, model: &Model, report: &mut Report) {
    for (id, image) in model.images.iter().filter(|(id, i)| facts.images.contains_key(id) && i.file_at_insert) {
        let Some(place) = &image.place else { continue };
        if facts.store.contains(place) {
            continue;
        }
        let what = format!(
            "the file {place} of live image {id} ({}, stored {:?}{})",
            image.kind,
            image.stored,
            if image.old_mtime { ", written with an old mtime as cp -p does" } else { "" }
        );
        let swept = taken_by(facts, model, place);
        let sharer = sharer(facts, model, *id, place);
        if !swept.is_empty() && image.row_within_grace {
            report.add(I5, format!("{what} is gone{swept}, though the row was committed less than {MIN_AGE:?} after the file was written"));
        } else if let Some((other, i, deleted)) = sharer {
            let how = format!(
                "{what} is gone: it was unlinked with image {other} (stored {:?}), {}",
                i.stored,
                facts.how_deleted(other)
            );
            // Janitor could see the row only if it was there when it deleted
            // the other one.
            if image.inserted_at + SEEN_BEFORE < deleted {
                report.add(I5, how);
            } else {
                report.notes.push(format!("{how}; the row was inserted as the other one was being deleted"));
            }
        } else if !swept.is_empty() {
            report.notes.push(format!("{what} is gone{swept}; the simulator was slow to commit its row (allowed)"));
        } else {
            // Janitor deletes a row before its file, and only after the
            // commit: nothing it does leaves a live row without its file.
            report.add(I5, format!("{what} is gone and no sweep or row deletion explains it"));
        }
    }
}
