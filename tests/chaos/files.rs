//! The file side of the world: what is in the store (never following a
//! symlink, as janitor must not), the quarantine folders, and the sentinel
//! folder outside the root that nothing may ever change.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use janitor_workers::storage::CATEGORIES;
use uuid::Uuid;

const TRASH: &str = ".janitor-trash";

/// Whether `relative` names a file or symlink in the store, reached through
/// real folders only (a path through a symlinked folder is not in the store).
pub fn in_store(root: &Path, relative: &str) -> bool {
    let mut at = root.to_path_buf();
    let parts: Vec<&str> = relative.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        at.push(part);
        match fs::symlink_metadata(&at) {
            Ok(meta) if i + 1 < parts.len() && !meta.is_dir() => return false,
            Ok(meta) if i + 1 == parts.len() => return !meta.is_dir(),
            Ok(_) => {}
            Err(_) => return false,
        }
    }
    false
}

/// Every file and symlink under the category folders (relative paths).
pub fn store_files(root: &Path) -> BTreeSet<String> {
    CATEGORIES.iter().flat_map(|category| files_under(root, &root.join(category))).collect()
}

/// Files and symlinks under `folder`, relative to `base`, not following links.
fn files_under(base: &Path, folder: &Path) -> Vec<String> {
    walkdir::WalkDir::new(folder)
        .follow_links(false)
        .follow_root_links(false)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|entry| !entry.file_type().is_dir())
        .map(|entry| entry.path().strip_prefix(base).unwrap().to_string_lossy().into_owned())
        .collect()
}

/// A job's quarantine folder's files, relative to that folder (so, the
/// store paths they came from).
pub fn trash_of(root: &Path, job: Uuid) -> BTreeSet<String> {
    let folder = root.join(TRASH).join(job.to_string());
    if fs::symlink_metadata(&folder).map(|m| !m.is_dir()).unwrap_or(true) {
        return BTreeSet::new();
    }
    files_under(&folder, &folder).into_iter().collect()
}

/// Every job's quarantine folder there is now.
pub fn trash_folders(root: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let Ok(entries) = fs::read_dir(root.join(TRASH)) else { return BTreeMap::new() };
    let mut folders = BTreeMap::new();
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name().to_string_lossy().into_owned();
        let files = match name.parse::<Uuid>() {
            Ok(job) => trash_of(root, job),
            Err(_) => BTreeSet::from(["(not a job folder)".to_owned()]),
        };
        folders.insert(name, files);
    }
    folders
}

/// Writes a small file (creating its folders); with `old`, backdates it by
/// three hours, as `cp -p` of an old file would.
pub fn write(path: &Path, bytes: usize, old: bool) -> std::io::Result<()> {
    fs::create_dir_all(path.parent().unwrap())?;
    fs::write(path, vec![b'c'; bytes])?;
    if old {
        let then = SystemTime::now() - Duration::from_secs(3 * 3600);
        fs::File::options().write(true).open(path)?.set_modified(then)?;
    }
    Ok(())
}

pub fn symlink(target: &Path, link: &Path) -> std::io::Result<()> {
    fs::create_dir_all(link.parent().unwrap())?;
    std::os::unix::fs::symlink(target, link)
}

/// One entry of the sentinel folder as the oracle compares it.
#[derive(Clone, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File { bytes: Vec<u8>, modified: SystemTime },
    Link(PathBuf),
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Entry::Dir => write!(f, "a folder"),
            Entry::File { bytes, modified } => write!(
                f,
                "a file of {} bytes modified {}",
                bytes.len(),
                chrono::DateTime::<chrono::Utc>::from(*modified)
            ),
            Entry::Link(target) => write!(f, "a symlink to {}", target.display()),
        }
    }
}

/// A folder outside the storage root: files, a folder of "secrets" that a
/// symlinked folder inside the root leads to, and empty landing folders that
/// a restore through a symlink would write into.
pub struct Sentinel {
    dir: tempfile::TempDir,
    before: BTreeMap<String, Entry>,
}

pub const SENTINEL_FILES: usize = 6;

impl Sentinel {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("create the sentinel folder");
        for i in 0..SENTINEL_FILES {
            fs::write(dir.path().join(format!("f{i}")), format!("sentinel file {i}")).unwrap();
            fs::create_dir_all(dir.path().join("secrets")).unwrap();
            fs::write(dir.path().join(format!("secrets/secret{i}")), format!("secret {i}")).unwrap();
            fs::create_dir_all(dir.path().join(format!("landing{i}"))).unwrap();
        }
        let before = snapshot(dir.path());
        Self { dir, before }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Every difference from the state at creation.
    pub fn changes(&self) -> Vec<String> {
        let now = snapshot(self.dir.path());
        let mut changes = Vec::new();
        for (path, entry) in &self.before {
            match now.get(path) {
                None => changes.push(format!("{path}: removed (was {entry:?})")),
                Some(after) if after != entry => changes.push(format!("{path}: changed from {entry:?} to {after:?}")),
                Some(_) => {}
            }
        }
        for (path, entry) in &now {
            if !self.before.contains_key(path) {
                changes.push(format!("{path}: appeared ({entry:?})"));
            }
        }
        changes
    }
}

fn snapshot(dir: &Path) -> BTreeMap<String, Entry> {
    let mut entries = BTreeMap::new();
    for entry in walkdir::WalkDir::new(dir).follow_links(false).min_depth(1).into_iter().filter_map(Result::ok) {
        let relative = entry.path().strip_prefix(dir).unwrap().to_string_lossy().into_owned();
        let kind = entry.file_type();
        let recorded = if kind.is_dir() {
            Entry::Dir
        } else if kind.is_symlink() {
            Entry::Link(fs::read_link(entry.path()).unwrap_or_default())
        } else {
            let modified = entry.metadata().ok().and_then(|m| m.modified().ok()).unwrap_or(SystemTime::UNIX_EPOCH);
            Entry::File { bytes: fs::read(entry.path()).unwrap_or_default(), modified }
        };
        entries.insert(relative, recorded);
    }
    entries
}
