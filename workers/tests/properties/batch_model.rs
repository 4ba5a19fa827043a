//! A model of the row phases (`jobs/rows.rs` driven by the engine) under
//! crashes, keeping its books with the crate's real [`Progress`].
//!
//! The world is the `images` table, the job's saved progress (JSON, as
//! `job_results` holds it) and the storage. The job has two row phases, as
//! `cleanup_all` has expired and then old results; a row may qualify for
//! either or both. A run does what the code does: per batch, unlink the free
//! rows' files, then commit the row deletions, counters, error items and
//! cursor together; at a phase's end, `next_phase` and save. A crash may
//! strike between any two of those steps, and the next run resumes from what
//! was saved last. Rows held by other transactions (`SKIP LOCKED`, `defer`)
//! are not modelled: a single run owns every row here.

use std::collections::{BTreeMap, BTreeSet};

use chrono::DateTime;
use janitor_workers::progress::{Counters, Cursor, ErrorItem, Progress};
use janitor_workers::storage::{RelativePath, Removal};
use proptest::prelude::*;

const PHASES: [&str; 2] = ["cleanup_expired_images", "cleanup_old_results"];
const ERROR_CAP: usize = 100_000;

/// How unlinking a row's file goes.
#[derive(Debug, Clone, Copy)]
enum Unlink {
    Works,
    /// Always refused (`EACCES`, or a directory in its place).
    Denied,
    /// Attempt `n` (0-based, over all runs) fails if bit `n % 8` is set.
    Flaky(u8),
}

#[derive(Debug, Clone)]
struct Row {
    path: String,
    size: i64,
    has_file: bool,
    in_use: bool,
    /// Bit `p` set: the row is a candidate of phase `p`.
    phases: u8,
    unlink: Unlink,
}

/// Counts a run's steps and blows at the planned one.
struct Fuse {
    step: usize,
    at: Option<usize>,
}

impl Fuse {
    fn blows(&mut self) -> bool {
        self.step += 1;
        self.at == Some(self.step - 1)
    }
}

struct World {
    rows: BTreeMap<i64, Row>,
    files: BTreeSet<String>,
    attempts: BTreeMap<String, u32>,
    /// `job_results.checkpoint` and `job_results.errors`.
    saved: Option<(serde_json::Value, serde_json::Value)>,
    /// The ids in the table when each phase ended.
    phase_ends: [Option<BTreeSet<i64>>; 2],
}

impl World {
    fn new(rows: &[Row]) -> Self {
        // Ids ascend with gaps, as after earlier deletions.
        let rows: BTreeMap<i64, Row> =
            rows.iter().enumerate().map(|(i, row)| (3 * i as i64 + 1, row.clone())).collect();
        let files = rows.values().filter(|row| row.has_file).map(|row| row.path.clone()).collect();
        Self { rows, files, attempts: BTreeMap::new(), saved: None, phase_ends: [None, None] }
    }

    fn unlink(&mut self, id: i64) -> Removal {
        let row = &self.rows[&id];
        let attempt = self.attempts.entry(row.path.clone()).or_default();
        *attempt += 1;
        let fails = match row.unlink {
            Unlink::Works => false,
            Unlink::Denied => true,
            Unlink::Flaky(mask) => mask & (1 << ((*attempt - 1) % 8)) != 0,
        };
        if !self.files.contains(&row.path) {
            Removal::Missing
        } else if fails {
            Removal::Failed("permission denied".into())
        } else {
            self.files.remove(&row.path);
            Removal::Removed
        }
    }

    /// What the engine starts from: the saved checkpoint, or a fresh start.
    fn resume(&self) -> Progress {
        let as_of = DateTime::from_timestamp(1_700_000_000, 0).unwrap();
        let Some((checkpoint, errors)) = &self.saved else {
            return Progress::new(as_of, PHASES.len(), ERROR_CAP);
        };
        let mut progress = Progress::new(as_of, 0, ERROR_CAP);
        progress.checkpoint = serde_json::from_value(checkpoint.clone()).unwrap();
        progress.errors = serde_json::from_value(errors.clone()).unwrap();
        progress
    }

    /// One transaction: row deletions with the progress that counts them.
    fn commit(&mut self, gone: &[i64], progress: &Progress) {
        for id in gone {
            self.rows.remove(id);
        }
        let checkpoint = serde_json::to_value(&progress.checkpoint).unwrap();
        self.saved = Some((checkpoint, serde_json::to_value(&progress.errors).unwrap()));
    }

    /// The engine's loop over phases; `Ok(false)` if the fuse blew.
    fn run(&mut self, batch_size: usize, fuse: &mut Fuse) -> Result<bool, TestCaseError> {
        let mut progress = self.resume();
        while let Some(phase) = PHASES.get(progress.checkpoint.phase) {
            if !self.run_phase(phase, batch_size, fuse, &mut progress)? {
                return Ok(false);
            }
            let ids: BTreeSet<i64> = self.rows.keys().copied().collect();
            let seen = self.phase_ends[progress.checkpoint.phase].get_or_insert_with(|| ids.clone());
            prop_assert_eq!(&*seen, &ids, "phase {} ended twice, differently", phase);
            progress.next_phase();
            if fuse.blows() {
                return Ok(false);
            }
            if progress.checkpoint.phase < PHASES.len() {
                self.commit(&[], &progress);
            }
        }
        Ok(true)
    }

    /// `jobs::rows::run` for one phase, in the same order of steps.
    fn run_phase(
        &mut self,
        operation: &str,
        batch_size: usize,
        fuse: &mut Fuse,
        progress: &mut Progress,
    ) -> Result<bool, TestCaseError> {
        let bit = 1 << progress.checkpoint.phase;
        for _ in 0..=self.rows.len() {
            let after = match progress.checkpoint.cursor {
                Cursor::AfterId(id) => id,
                _ => 0,
            };
            let ids: Vec<i64> = self
                .rows
                .range(after + 1..)
                .filter(|(_, row)| row.phases & bit != 0)
                .map(|(id, _)| *id)
                .take(batch_size)
                .collect();
            let Some(&last) = ids.last() else {
                return Ok(true);
            };
            let mut delta = Counters::default();
            let mut errors = Vec::new();
            let item = |id: i64, row: &Row, error: String| ErrorItem {
                image_id: Some(id),
                path: row.path.clone(),
                error,
                operation: operation.to_owned(),
            };
            let mut free = Vec::new();
            for &id in &ids {
                let row = &self.rows[&id];
                if row.in_use {
                    delta.skipped += 1;
                    continue;
                }
                match RelativePath::parse(&row.path) {
                    Ok(_) => free.push(id),
                    Err(err) => errors.push(item(id, row, err.to_string())),
                }
            }
            let mut gone = Vec::new();
            for id in free {
                if fuse.blows() {
                    return Ok(false);
                }
                match self.unlink(id) {
                    Removal::Removed | Removal::Missing => gone.push(id),
                    Removal::Failed(message) => errors.push(item(id, &self.rows[&id], message)),
                }
            }
            if fuse.blows() {
                return Ok(false);
            }
            delta.deleted = gone.len() as i64;
            delta.bytes = gone.iter().map(|id| self.rows[id].size).sum();
            delta.errors = errors.len() as i64;
            let mut next = progress.clone();
            next.record(delta, errors, Cursor::AfterId(last));
            self.commit(&gone, &next);
            *progress = next;
            if fuse.blows() {
                return Ok(false);
            }
        }
        Err(TestCaseError::fail("the phase does not end: its cursor does not advance"))
    }
}

/// What phase `p` must have counted, from the table before and after it.
fn truth(
    initial: &BTreeMap<i64, Row>,
    before: &BTreeSet<i64>,
    after: &BTreeSet<i64>,
    p: usize,
) -> (Counters, BTreeSet<i64>) {
    let mine = |id: &&i64| initial[*id].phases & (1 << p) != 0;
    let deleted: Vec<i64> = before.difference(after).filter(mine).copied().collect();
    let kept: Vec<i64> = after.iter().filter(mine).copied().collect();
    let failed: BTreeSet<i64> = kept.iter().filter(|id| !initial[*id].in_use).copied().collect();
    let counters = Counters {
        deleted: deleted.len() as i64,
        bytes: deleted.iter().map(|id| initial[id].size).sum(),
        skipped: (kept.len() - failed.len()) as i64,
        errors: failed.len() as i64,
    };
    (counters, failed)
}

fn row(i: usize) -> impl Strategy<Value = Row> {
    let unlink =
        prop_oneof![6 => Just(Unlink::Works), 1 => Just(Unlink::Denied), 2 => any::<u8>().prop_map(Unlink::Flaky)];
    let weighted = prop::bool::weighted;
    (0i64..10_000_000, weighted(0.85), weighted(0.1), weighted(0.05), 1u8..=3, unlink).prop_map(
        move |(size, has_file, in_use, bad_path, phases, unlink)| {
            let path = if bad_path { format!("photos/../{i}.jpg") } else { format!("photos/{i}.jpg") };
            Row { path, size, has_file, in_use, phases, unlink }
        },
    )
}

fn rows() -> impl Strategy<Value = Vec<Row>> {
    (0usize..40).prop_flat_map(|n| (0..n).map(row).collect::<Vec<_>>())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    #[test]
    fn batches_survive_crashes_anywhere(
        rows in rows(),
        batch_size in 1usize..8,
        crashes in prop::collection::vec(0usize..96, 0..6),
    ) {
        let mut world = World::new(&rows);
        let initial = world.rows.clone();
        let mut finished = false;
        for at in crashes.into_iter().map(Some).chain([None]) {
            if world.run(batch_size, &mut Fuse { step: 0, at })? {
                finished = true;
                break;
            }
        }
        prop_assert!(finished, "the run without a crash did not finish");

        let saved = world.resume();
        let mut before: BTreeSet<i64> = initial.keys().copied().collect();
        for (p, operation) in PHASES.iter().enumerate() {
            let after = world.phase_ends[p].clone().unwrap();
            let (counters, failed) = truth(&initial, &before, &after, p);
            prop_assert_eq!(saved.checkpoint.phases[p], counters, "phase {}", operation);
            let items: Vec<i64> =
                saved.errors.iter().filter(|e| e.operation == *operation).map(|e| e.image_id.unwrap()).collect();
            prop_assert_eq!(items.len(), failed.len(), "error items of {}: {:?}", operation, items);
            prop_assert_eq!(items.into_iter().collect::<BTreeSet<_>>(), failed);
            before = after;
        }

        for (id, row) in &initial {
            let file = world.files.contains(&row.path);
            if world.rows.contains_key(id) {
                prop_assert_eq!(file, row.has_file, "remaining row {} lost its file", id);
            } else {
                prop_assert!(!file, "deleted row {}'s file remains", id);
            }
            if row.in_use {
                prop_assert!(!world.attempts.contains_key(&row.path), "in-use row {} was unlinked", id);
            }
        }
    }
}
