//! The simulated application's face-swap tasks: created on images that are
//! expired or about to expire, sharing result images between tasks and
//! through different columns, some completed long ago (old results), and
//! flipped between statuses in every direction.
//!
//! A task's image counts as in use only from a commit that made the task
//! active and returned the image's id (so its row existed then: `ON DELETE
//! SET NULL` would have cleared the column otherwise), and its file only if
//! the file was there right after that commit. From then on, while the task
//! stays active, both must stay. The flipper checks that whenever it ends an
//! active spell; the oracle checks the tasks still active at the end.

use std::sync::Arc;

use chrono::Utc;
use rand::Rng as _;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::files;
use crate::model::{active, Ref, Seen, TaskRec};
use crate::plan::{pause, pick, Rng};
use crate::world::World;

const COLUMNS: [&str; 4] = ["husband_photo_id", "wife_photo_id", "template_id", "result_image_id"];
const PHOTOS: [&str; 10] =
    ["expired", "expiring", "session", "permanent", "fresh", "slash", "alias", "symlink", "linked", "outside"];

type Returned = (Option<i64>, Option<i64>, Option<i64>, Option<i64>);
/// A task's id (or its result column before an update) and its four columns.
type Row = (Option<i64>, Option<i64>, Option<i64>, Option<i64>, Option<i64>);

/// Creates tasks until told to stop.
pub async fn create(world: Arc<World>, mut rng: Rng, stop: CancellationToken) {
    let mut conn = world.connect().await;
    while !stop.is_cancelled() {
        create_one(&world, &mut conn, &mut rng).await;
        tokio::time::sleep(pause(&mut rng, 20, 90)).await;
    }
}

/// Flips statuses until told to stop. The only writer of existing tasks.
pub async fn flip(world: Arc<World>, mut rng: Rng, stop: CancellationToken) {
    let mut conn = world.connect().await;
    while !stop.is_cancelled() {
        flip_one(&world, &mut conn, &mut rng).await;
        tokio::time::sleep(pause(&mut rng, 10, 60)).await;
    }
}

/// One of `ids` (newest first): mostly a recent one, since janitor deletes
/// old ones soon and a task on a deleted image is refused.
fn any(rng: &mut Rng, ids: &[i64]) -> Option<i64> {
    let recent = if rng.gen_bool(0.8) { ids.len().min(120) } else { ids.len() };
    (recent > 0).then(|| ids[rng.gen_range(0..recent)])
}

/// Four columns' images for a new task.
fn choose_images(world: &World, rng: &mut Rng, finished: bool) -> [Option<i64>; 4] {
    let model = world.model();
    let photos = model.images_of(&PHOTOS);
    let templates = model.images_of(&["template", "expired", "expiring"]);
    let results = model.images_of(&["result"]);
    let pick_photo = |rng: &mut Rng| if rng.gen_bool(0.1) { any(rng, &results) } else { any(rng, &photos) };
    let husband = rng.gen_bool(0.6).then(|| pick_photo(rng)).flatten();
    let wife = rng.gen_bool(0.5).then(|| pick_photo(rng)).flatten();
    let template = rng.gen_bool(0.3).then(|| any(rng, &templates)).flatten();
    // Recent results are shared most: the newest few.
    let recent: Vec<i64> = results.iter().take(8).copied().collect();
    let result = if rng.gen_bool(if finished { 0.9 } else { 0.15 }) {
        if rng.gen_bool(0.4) {
            any(rng, &recent)
        } else {
            any(rng, &results)
        }
    } else {
        None
    };
    [husband, wife, template, result]
}

async fn create_one(world: &World, conn: &mut PgConnection, rng: &mut Rng) {
    let (status, completed) = pick(
        rng,
        &[
            (("pending", "null"), 30),
            (("processing", "null"), 20),
            (("completed", "old"), 22),
            (("completed", "now"), 12),
            (("failed", "old"), 8),
            (("failed", "now"), 4),
        ],
    );
    let images = choose_images(world, rng, !active(status));
    if images.iter().all(Option::is_none) {
        return;
    }
    let inserted: sqlx::Result<Row> = sqlx::query_as(
        "INSERT INTO face_swap_tasks (husband_photo_id, wife_photo_id, template_id, result_image_id, status, completed_at)
         VALUES ($1, $2, $3, $4, $5, CASE $6 WHEN 'old' THEN now() - interval '40 days'
                                             WHEN 'now' THEN now() - interval '1 hour' END)
         RETURNING id, husband_photo_id, wife_photo_id, template_id, result_image_id",
    )
    .bind(images[0])
    .bind(images[1])
    .bind(images[2])
    .bind(images[3])
    .bind(status)
    .bind(completed)
    .fetch_one(&mut *conn)
    .await;
    let mut model = world.model();
    let (id, h, w, t, r) = match inserted {
        Ok((id, h, w, t, r)) => (id.expect("a new task has an id"), h, w, t, r),
        Err(err) if refused(&err) => {
            model.stats.tasks_refused += 1;
            return;
        }
        Err(err) => panic!("the simulator's task insert failed: {err}"),
    };
    let since = model.commit();
    model.stats.tasks += 1;
    drop(model);
    let refs = if active(status) { checked_refs(world, (h, w, t, r)) } else { Vec::new() };
    let now = Utc::now();
    world.model().tasks.insert(id, TaskRec { status, refs, since, since_at: now, changed_at: now });
}

/// The images a commit returned, each with whether its file is there now.
fn checked_refs(world: &World, returned: Returned) -> Vec<Ref> {
    let (h, w, t, r) = returned;
    let model = world.model();
    COLUMNS
        .iter()
        .zip([h, w, t, r])
        .filter_map(|(column, image)| {
            let image = image?;
            let place = model.images.get(&image).and_then(|i| i.place.as_deref());
            let file_checked = place.is_some_and(|p| files::in_store(world.env.store.root(), p));
            Some(Ref { column, image, file_checked })
        })
        .collect()
}

/// Whether the statement was refused and changed nothing: an image janitor
/// deleted meanwhile (foreign key), or a lock conflict with janitor's
/// batch that Postgres broke (deadlock, lock timeout).
fn refused(err: &sqlx::Error) -> bool {
    let code = err.as_database_error().and_then(|e| e.code());
    code.is_some_and(|code| matches!(code.as_ref(), "23503" | "40P01" | "40001" | "55P03"))
}

/// A task to flip (mostly a recent one: they hold the images janitor is
/// after), as the model has it.
fn choose_task(world: &World, rng: &mut Rng) -> Option<(i64, TaskRec)> {
    let model = world.model();
    // Often a finished task: bringing it back to life is where a batch
    // that already judged its images free can be caught out.
    let finished = rng.gen_bool(0.4);
    let ids: Vec<i64> = model.tasks.iter().filter(|(_, t)| !finished || !active(t.status)).map(|(id, _)| *id).collect();
    if ids.is_empty() {
        return None;
    }
    let newest = ids.len().saturating_sub(60);
    let index = if rng.gen_bool(0.7) { rng.gen_range(newest..ids.len()) } else { rng.gen_range(0..ids.len()) };
    Some((ids[index], model.tasks[&ids[index]].clone()))
}

/// The flip: a new status, what happens to `completed_at`, and sometimes a
/// result image set with a completion.
fn choose_flip(world: &World, rng: &mut Rng, from: &str) -> (&'static str, &'static str, Option<i64>) {
    let statuses: Vec<&'static str> =
        ["pending", "processing", "completed", "failed"].into_iter().filter(|s| *s != from).collect();
    let revive = !active(from) && rng.gen_bool(0.6);
    let status = if revive {
        pick(rng, &[("pending", 1), ("processing", 1)])
    } else {
        statuses[rng.gen_range(0..statuses.len())]
    };
    let completed =
        if active(status) { pick(rng, &[("keep", 1), ("null", 1)]) } else { pick(rng, &[("old", 1), ("now", 1)]) };
    let result = if status == "completed" && rng.gen_bool(0.2) {
        let model = world.model();
        any(rng, &model.images_of(&["result"]))
    } else {
        None
    };
    (status, completed, result)
}

async fn flip_one(world: &World, conn: &mut PgConnection, rng: &mut Rng) {
    let Some((id, before)) = choose_task(world, rng) else { return };
    let (status, completed, result) = choose_flip(world, rng, before.status);
    let vanished = if active(before.status) { files_still_there(world, id, &before) } else { Vec::new() };
    // The result column as it was before this update (read under the row
    // lock, so nothing can change it in between), and as it is after it.
    let returned: sqlx::Result<Row> = sqlx::query_as(
        "WITH old AS (SELECT id, result_image_id FROM face_swap_tasks WHERE id = $1 FOR UPDATE)
         UPDATE face_swap_tasks t SET status = $2,
             completed_at = CASE $3 WHEN 'old' THEN now() - interval '40 days' WHEN 'now' THEN now()
                                    WHEN 'null' THEN NULL ELSE t.completed_at END,
             result_image_id = coalesce($4, t.result_image_id)
         FROM old WHERE t.id = old.id
         RETURNING t.husband_photo_id, t.wife_photo_id, t.template_id, old.result_image_id, t.result_image_id",
    )
    .bind(id)
    .bind(status)
    .bind(completed)
    .bind(result)
    .fetch_one(&mut *conn)
    .await;
    let (before_update, returned) = match returned {
        Ok((h, w, t, old_r, r)) => ((h, w, t, old_r), (h, w, t, r)),
        Err(err) if refused(&err) => {
            world.model().stats.flips_refused += 1;
            return;
        }
        Err(err) => panic!("the simulator's status flip failed: {err}"),
    };
    let since = world.model().commit();
    let mut kept = before.refs.clone();
    if active(before.status) {
        kept = rows_still_there(world, id, &before, before_update, &vanished);
    }
    let refs = match (active(before.status), active(status)) {
        (true, true) => kept,
        (false, true) => checked_refs(world, returned),
        _ => Vec::new(),
    };
    let now = Utc::now();
    let (since, since_at) =
        if active(before.status) && active(status) { (before.since, before.since_at) } else { (since, now) };
    let mut model = world.model();
    model.stats.flips += 1;
    model.tasks.insert(id, TaskRec { status, refs, since, since_at, changed_at: now });
}

/// While the task is still active (before the flip commits), every file it
/// was given must still be there. Returns the images whose file is gone
/// (each reported once).
fn files_still_there(world: &World, task: i64, before: &TaskRec) -> Vec<i64> {
    let mut model = world.model();
    let mut vanished = Vec::new();
    for r in before.refs.iter().filter(|r| r.file_checked) {
        let Some(place) = model.images.get(&r.image).and_then(|i| i.place.clone()) else { continue };
        if !files::in_store(world.env.store.root(), &place) {
            let stored = &model.images[&r.image].stored;
            let violation = format!(
                "I1 task {task} ({}, active since simulator commit #{}): the file of image {} ({}, stored {stored:?}) \
                 at {place} vanished while the task was active",
                before.status, before.since, r.image, r.column
            );
            model.saw(Seen { text: violation, image: Some(r.image), active_since: Some(before.since_at) });
            vanished.push(r.image);
        }
    }
    vanished
}

/// The task's columns just before the flip changed them: an image the task
/// had while active must not have been cleared (it was deleted while in use). Returns the refs
/// still there, with the files already reported no longer checked.
fn rows_still_there(world: &World, task: i64, before: &TaskRec, returned: Returned, vanished: &[i64]) -> Vec<Ref> {
    let (h, w, t, r) = returned;
    let now: Vec<(&str, Option<i64>)> = COLUMNS.iter().copied().zip([h, w, t, r]).collect();
    let mut model = world.model();
    let mut kept = Vec::new();
    for r in &before.refs {
        let still = now.iter().any(|(column, image)| *column == r.column && *image == Some(r.image));
        if still {
            kept.push(Ref { file_checked: r.file_checked && !vanished.contains(&r.image), ..r.clone() });
            continue;
        }
        let stored = model.images.get(&r.image).map(|i| i.stored.clone()).unwrap_or_default();
        let violation = format!(
            "I1 task {task} ({}, active since simulator commit #{}): image {} ({}, stored {stored:?}) was deleted \
             while the task was active (the column is NULL when the simulator next changed the task)",
            before.status, before.since, r.image, r.column
        );
        model.saw(Seen { text: violation, image: Some(r.image), active_since: Some(before.since_at) });
    }
    kept
}
