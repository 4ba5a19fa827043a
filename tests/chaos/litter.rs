//! Files no row will ever reference: old ones (past the grace period at
//! once), new ones (past it two seconds later), symlinks to files outside
//! the root. And an operator who restores finished sweeps' quarantine, now
//! and then after replacing an emptied folder by a symlink to a folder
//! outside the root (a restore must not follow it).

use std::collections::BTreeSet;
use std::sync::Arc;

use rand::Rng as _;
use tokio_util::sync::CancellationToken;

use crate::files::{self, SENTINEL_FILES};
use crate::model::{FileRec, Restore};
use crate::plan::{pause, pick, Rng};
use crate::world::{World, LINKED_FOLDERS};

/// Drops litter until told to stop.
pub async fn run(world: Arc<World>, mut rng: Rng, stop: CancellationToken) {
    let mut folder: Option<(String, u32)> = None;
    while !stop.is_cancelled() {
        let (path, n) = {
            let mut model = world.model();
            let (current, left) = match folder.take() {
                Some((current, left)) if left > 0 => (current, left),
                previous => {
                    if let Some((done, _)) = previous {
                        model.closed_folders.insert(done);
                    }
                    let category =
                        pick(&mut rng, &[("photos", 3), ("templates", 1), ("preprocessed", 1), ("results", 1)]);
                    (format!("{category}/litter/g{}", model.next_name()), rng.gen_range(1..=4))
                }
            };
            let n = model.next_name();
            let path = format!("{current}/{n}.bin");
            folder = Some((current, left - 1));
            (path, n)
        };
        if rng.gen_bool(0.05) {
            replant_linked_folders(&world);
        }
        let kind = pick(&mut rng, &[("orphan-old", 5), ("orphan-new", 3), ("orphan-symlink", 1)]);
        let target = world.env.store.path(&path);
        let made = match kind {
            "orphan-symlink" => {
                files::symlink(&world.sentinel.path().join(format!("f{}", n as usize % SENTINEL_FILES)), &target)
            }
            _ => files::write(&target, rng.gen_range(1..100), kind == "orphan-old"),
        };
        made.unwrap_or_else(|err| panic!("the simulator writes {path}: {err}"));
        {
            let mut model = world.model();
            model.files.insert(path, FileRec { kind });
            model.stats.orphans += 1;
        }
        tokio::time::sleep(pause(&mut rng, 20, 120)).await;
    }
}

/// Puts back the symlinked folders (`photos/ld<i>`) a sweep took as
/// orphans (a symlink is a file to the sweep), so that rows keep pointing
/// through them.
fn replant_linked_folders(world: &World) {
    for i in 0..LINKED_FOLDERS {
        let folder = format!("photos/ld{i}");
        let link = world.env.store.path(&folder);
        if std::fs::symlink_metadata(&link).is_err() {
            files::symlink(&world.sentinel.path().join("secrets"), &link).expect("replant a symlinked folder");
            world.model().files.insert(folder, FileRec { kind: "linked-folder" });
        }
    }
}

/// Restores a finished sweep's quarantine now and then, until told to stop.
pub async fn operate(world: Arc<World>, mut rng: Rng, stop: CancellationToken) {
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(pause(&mut rng, 3000, 8000)) => {}
        }
        let candidates: Vec<(uuid::Uuid, Vec<String>)> = {
            let model = world.model();
            let restored: BTreeSet<uuid::Uuid> = model.restores.iter().map(|r| r.job).collect();
            model
                .snapshots
                .iter()
                .filter(|(job, snapshot)| !snapshot.files.is_empty() && !restored.contains(job))
                .map(|(job, snapshot)| (*job, snapshot.files.iter().cloned().collect()))
                .collect()
        };
        if candidates.is_empty() {
            continue;
        }
        let (job, quarantined) = &candidates[rng.gen_range(0..candidates.len())];
        if rng.gen_bool(0.5) && world.plan.does("restore-escape") {
            plant_folder_link(&world, &mut rng, quarantined);
        }
        let root = world.env.store.root();
        let before = files::trash_of(root, *job);
        let (code, stdout, stderr) = world.env.janitor(&["restore", &job.to_string(), "--json"]).await;
        let after = files::trash_of(root, *job);
        let moved = before.difference(&after).cloned().collect();
        let output = format!("exit {code}: {} {}", stdout.trim(), stderr.trim());
        let mut model = world.model();
        model.stats.restores += 1;
        model.restores.push(Restore { job: *job, moved, output });
    }
}

/// Replaces one emptied litter folder that a quarantined file came from by
/// a symlink to an empty folder outside the root.
fn plant_folder_link(world: &World, rng: &mut Rng, quarantined: &[String]) {
    let root = world.env.store.root();
    let folders: Vec<String> = {
        let model = world.model();
        quarantined
            .iter()
            .filter_map(|path| path.rsplit_once('/').map(|(folder, _)| folder.to_owned()))
            .filter(|folder| model.closed_folders.contains(folder))
            .collect()
    };
    if folders.is_empty() {
        return;
    }
    let folder = &folders[rng.gen_range(0..folders.len())];
    let path = root.join(folder);
    // Only an empty real folder (remove_dir refuses anything else).
    if std::fs::symlink_metadata(&path).map(|m| !m.is_dir()).unwrap_or(true) || std::fs::remove_dir(&path).is_err() {
        return;
    }
    let landing = world.sentinel.path().join(format!("landing{}", rng.gen_range(0..SENTINEL_FILES)));
    std::os::unix::fs::symlink(landing, &path).expect("plant a folder symlink");
    world.model().files.insert(folder.clone(), FileRec { kind: "folder-symlink" });
}
