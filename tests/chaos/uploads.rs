//! The simulated application's uploads: it writes a file, then commits the
//! row a little later, as the real one does. Some images are temporary and
//! expired or about to expire, some belong to sessions (which log out: a
//! session job), some are results for tasks. A few are odd the way real
//! stores are: stored as `/photos/…`, a second row naming another row's
//! file, a file copied with its old modification time, a symlink to a file
//! outside the root, a path through a symlinked folder, a path outside.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use janitor_workers::{CleanupJob, JobSpec, SessionId};
use rand::Rng as _;
use sqlx::PgConnection;
use tokio_util::sync::CancellationToken;

use crate::files::{self, SENTINEL_FILES};
use crate::model::{FileRec, ImageRec};
use crate::plan::{pause, pick, Rng};
use crate::world::{World, LINKED_FOLDERS, MIN_AGE};

/// The image kinds and how often each is uploaded.
const KINDS: [(&str, u32); 12] = [
    ("expired", 26),
    ("expiring", 14),
    ("fresh", 7),
    ("permanent", 7),
    ("template", 5),
    ("result", 15),
    ("session", 14),
    ("slash", 4),
    ("alias", 3),
    ("symlink", 2),
    ("linked", 2),
    ("outside", 1),
];

/// Uploads (and now and then a logout) until told to stop.
pub async fn run(world: Arc<World>, mut rng: Rng, stop: CancellationToken) {
    let mut conn = world.connect().await;
    while !stop.is_cancelled() {
        if rng.gen_bool(0.05) {
            logout(&world, &mut rng).await;
        } else {
            upload(&world, &mut conn, &mut rng).await;
        }
        tokio::time::sleep(pause(&mut rng, 5, 40)).await;
    }
}

/// What one upload writes and inserts.
struct Upload {
    stored: String,
    place: Option<String>,
    kind: &'static str,
    storage_type: &'static str,
    /// Seconds from now; `None`: no expiry.
    expires_in: Option<f64>,
    session: Option<String>,
    /// What the upload puts at `place` itself: a file, a symlink, or nothing.
    writes: Writes,
    old_mtime: bool,
}

impl Upload {
    /// The upload names a file it does not write itself.
    fn names_no_new_file(&mut self, stored: String, place: Option<String>) {
        self.stored = stored;
        self.place = place;
        self.writes = Writes::Nothing;
        self.old_mtime = false;
    }
}

/// A path through a folder symlinked to the sentinel's secrets, or a path
/// outside the root (absolute, or climbing out with `..`).
fn elsewhere(world: &World, rng: &mut Rng, kind: &str) -> (String, Option<String>) {
    if kind == "linked" {
        let linked =
            format!("photos/ld{}/secret{}", rng.gen_range(0..LINKED_FOLDERS), rng.gen_range(0..SENTINEL_FILES));
        return (linked.clone(), Some(linked));
    }
    let file = world.sentinel.path().join(format!("f{}", rng.gen_range(0..SENTINEL_FILES)));
    // A path climbing out with `..` only in one run of four (by the seed):
    // janitor may refuse every sweep while such a row exists, which would
    // leave the rest of the run without sweeps.
    let climbs = world.plan.seed % 4 == 0 && world.plan.does("climb");
    let stored = if rng.gen_bool(0.5) || !climbs {
        file.display().to_string()
    } else {
        let depth = world.env.store.root().components().count() - 1;
        format!("photos/{}{}", "../".repeat(depth + 1), file.display().to_string().trim_start_matches('/'))
    };
    (stored, None)
}

#[derive(Clone, Copy, PartialEq)]
enum Writes {
    File,
    Symlink(usize),
    Nothing,
}

fn plan_upload(world: &World, rng: &mut Rng) -> Option<Upload> {
    let kinds: Vec<(&str, u32)> =
        KINDS.iter().map(|&(kind, weight)| (kind, if world.plan.does(kind) { weight } else { 0 })).collect();
    let kind = pick(rng, &kinds);
    let (n, session, alias) = {
        let mut model = world.model();
        let session = (kind == "session" && !model.sessions.is_empty())
            .then(|| model.sessions[rng.gen_range(0..model.sessions.len())].clone());
        let alias = if kind == "alias" {
            let plain: Vec<&String> = model
                .images
                .values()
                .filter(|i| i.writes_own_file() && i.place.as_deref() == Some(i.stored.as_str()))
                .map(|i| &i.stored)
                .collect();
            (!plain.is_empty()).then(|| plain[rng.gen_range(0..plain.len())].clone())
        } else {
            None
        };
        (model.next_name(), session, alias)
    };
    let category = match kind {
        "template" => "templates",
        "result" => "results",
        _ => pick(rng, &[("photos", 6), ("preprocessed", 1)]),
    };
    let place = format!("{category}/up/{}/{n}.jpg", n / 25);
    let mut upload = Upload {
        stored: place.clone(),
        place: Some(place.clone()),
        kind,
        storage_type: "temporary",
        expires_in: Some(-(rng.gen_range(1.0..600.0))),
        session: None,
        writes: Writes::File,
        old_mtime: rng.gen_bool(0.05) && world.plan.does("cp-p"),
    };
    match kind {
        "expired" | "symlink" => {}
        "expiring" => upload.expires_in = Some(rng.gen_range(0.0..4.0)),
        "fresh" => upload.expires_in = Some(3600.0),
        "permanent" | "template" | "result" => {
            upload.storage_type = "permanent";
            upload.expires_in = None;
        }
        "session" => {
            upload.session = Some(session?);
            if rng.gen_bool(0.5) {
                upload.storage_type = "permanent";
                upload.expires_in = None;
            }
        }
        "slash" => upload.stored = format!("/{place}"),
        "alias" => {
            // A second row for another row's file, through a non-canonical
            // spelling of its path (the unique index allows both).
            let target = alias?;
            upload.names_no_new_file(format!("/{target}"), Some(target));
            if rng.gen_bool(0.7) {
                upload.storage_type = "permanent";
                upload.expires_in = None;
            }
        }
        "linked" | "outside" => {
            let (stored, place) = elsewhere(world, rng, kind);
            upload.names_no_new_file(stored, place);
        }
        _ => unreachable!("every kind is handled"),
    }
    if kind == "symlink" {
        upload.writes = Writes::Symlink(rng.gen_range(0..SENTINEL_FILES));
        upload.old_mtime = false;
    }
    Some(upload)
}

async fn upload(world: &World, conn: &mut PgConnection, rng: &mut Rng) {
    let Some(upload) = plan_upload(world, rng) else { return };
    let size = rng.gen_range(1..200);
    let written = Instant::now();
    let path = upload.place.as_ref().map(|place| world.env.store.path(place));
    let made = match (upload.writes, &path) {
        (Writes::File, Some(path)) => files::write(path, size, upload.old_mtime),
        (Writes::Symlink(k), Some(path)) => files::symlink(&world.sentinel.path().join(format!("f{k}")), path),
        _ => Ok(()),
    };
    made.unwrap_or_else(|err| panic!("the simulator writes {:?}: {err}", upload.place));
    // The row comes a little later, as the application's does.
    tokio::time::sleep(pause(rng, 0, 300)).await;
    let inserted: sqlx::Result<(i64, Option<DateTime<Utc>>, DateTime<Utc>)> = sqlx::query_as(
        "INSERT INTO images (filename, storage_path, category, storage_type, session_id, file_size, expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7))
         RETURNING id, CASE WHEN storage_type = 'temporary' THEN expires_at END, clock_timestamp()",
    )
    .bind(upload.stored.rsplit('/').next().unwrap_or("x"))
    .bind(&upload.stored)
    .bind(upload.place.as_deref().and_then(|p| p.split('/').next()).unwrap_or("photos"))
    .bind(upload.storage_type)
    .bind(&upload.session)
    .bind(size as i64)
    .bind(upload.expires_in)
    .fetch_one(&mut *conn)
    .await;
    let elapsed = written.elapsed();
    let mut model = world.model();
    if upload.writes != Writes::Nothing {
        let kind = if upload.writes == Writes::File { "row-file" } else { "row-symlink" };
        model.files.insert(upload.place.clone().unwrap(), FileRec { kind });
    }
    let Ok((id, expires_at, inserted_at)) = inserted else {
        // A duplicate path (an alias or linked path taken before); the file
        // written for it, if any, is litter now.
        model.stats.upload_refused += 1;
        return;
    };
    model.commit();
    model.stats.uploads += 1;
    let file_at_insert = upload.place.as_deref().is_some_and(|place| files::in_store(world.env.store.root(), place));
    // Measured from before the file was written to after the commit: well
    // inside the grace period unless the machine stalled.
    let row_within_grace = upload.writes != Writes::Nothing && elapsed + Duration::from_millis(300) < MIN_AGE;
    model.images.insert(
        id,
        ImageRec {
            stored: upload.stored,
            place: upload.place,
            kind: upload.kind,
            session: upload.session,
            expires_at,
            file_at_insert,
            row_within_grace,
            old_mtime: upload.old_mtime,
            inserted_at,
        },
    );
}

/// A new session now and then; a logout enqueues its cleanup.
async fn logout(world: &World, rng: &mut Rng) {
    let session = {
        let mut model = world.model();
        if model.sessions.len() < 3 || rng.gen_bool(0.3) {
            let name = format!("sess-{}", model.next_name());
            model.sessions.push(name);
            return;
        }
        let index = rng.gen_range(0..model.sessions.len());
        model.sessions.swap_remove(index)
    };
    let job = CleanupJob::Session { session_id: SessionId::parse(&session).unwrap() };
    let enqueued = world.producer.enqueue(&JobSpec::new(job, rng.gen_bool(0.05)), Some("chaos-logout")).await;
    let mut model = world.model();
    model.stats.logouts += 1;
    match enqueued {
        Ok(_) => model.stats.enqueued += 1,
        Err(_) => model.stats.enqueue_failed += 1,
    }
}
