//! The orphan sweep's view of the storage: a walk over the category folders
//! in a fixed order, so that a checkpoint (the last path handled) is enough to
//! resume it.
//!
//! The walk sorts each folder's entries by name and visits a folder's
//! contents right after the folder itself. That is exactly the order of
//! [`Path`]'s `Ord` (component by component), so "entries after the
//! checkpoint" is a plain comparison, and whole folders that lie before the
//! checkpoint are pruned without being read.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use walkdir::WalkDir;

use super::CATEGORIES;

/// One regular file or symlink found by the walk (never followed).
#[derive(Debug, Clone)]
pub struct FileEntry {
    /// Relative to the storage root, `/`-separated.
    pub path: String,
    pub size: u64,
    pub modified: SystemTime,
}

#[derive(Debug, Clone)]
pub enum ScanItem {
    File(FileEntry),
    /// Something the walk could not read or name; it becomes an error item
    /// and is never deleted.
    Error {
        path: String,
        error: String,
    },
}

impl ScanItem {
    pub fn path(&self) -> &str {
        match self {
            ScanItem::File(entry) => &entry.path,
            ScanItem::Error { path, .. } => path,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Scanner {
    root: PathBuf,
}

impl Scanner {
    pub(super) fn new(root: PathBuf) -> Self {
        Self { root }
    }

    /// Walks every category folder, yielding the entries after `after` (a
    /// path relative to the root) in walk order. Blocking: run it on a
    /// blocking thread.
    pub fn walk(&self, after: Option<&str>) -> impl Iterator<Item = ScanItem> + '_ {
        let after = after.map(PathBuf::from);
        let mut categories = CATEGORIES;
        categories.sort_unstable();
        categories.into_iter().flat_map(move |category| {
            let after = after.clone();
            self.walk_category(category, after)
        })
    }

    fn walk_category(&self, category: &str, after: Option<PathBuf>) -> Box<dyn Iterator<Item = ScanItem> + '_> {
        let top = self.root.join(category);
        match std::fs::symlink_metadata(&top) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => return Box::new(std::iter::once(category_error(category, "is not a directory"))),
            Err(err) => return Box::new(std::iter::once(category_error(category, &err.to_string()))),
        }
        let root = self.root.as_path();
        let keep = move |relative: &Path, is_dir: bool| match &after {
            None => true,
            Some(after) if is_dir => relative >= after.as_path() || after.starts_with(relative),
            Some(after) => relative > after.as_path(),
        };
        let walk = WalkDir::new(top)
            .follow_links(false)
            .follow_root_links(false)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(move |entry| {
                let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
                keep(relative, entry.file_type().is_dir())
            });
        Box::new(walk.filter_map(move |entry| match entry {
            Ok(entry) if entry.file_type().is_dir() => None,
            Ok(entry) => Some(file_item(root, &entry)),
            Err(err) => {
                let path = err.path().map(|p| relative_lossy(root, p)).unwrap_or_default();
                Some(ScanItem::Error { path, error: format!("cannot read during scan: {}", io_message(&err)) })
            }
        }))
    }
}

fn file_item(root: &Path, entry: &walkdir::DirEntry) -> ScanItem {
    let relative = entry.path().strip_prefix(root).unwrap_or(entry.path());
    let Some(path) = relative.to_str() else {
        return ScanItem::Error {
            path: relative.to_string_lossy().into_owned(),
            error: "file name is not valid UTF-8, so no row can reference it; left alone".into(),
        };
    };
    // The walk does not follow links, so this is the entry's own lstat.
    match entry.metadata() {
        Ok(meta) => ScanItem::File(FileEntry {
            path: path.to_owned(),
            size: meta.len(),
            modified: meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
        }),
        Err(err) => {
            ScanItem::Error { path: path.to_owned(), error: format!("cannot stat during scan: {}", io_message(&err)) }
        }
    }
}

fn category_error(category: &str, error: &str) -> ScanItem {
    ScanItem::Error { path: category.to_owned(), error: format!("category folder unusable: {error}") }
}

fn relative_lossy(root: &Path, path: &Path) -> String {
    path.strip_prefix(root).unwrap_or(path).to_string_lossy().into_owned()
}

fn io_message(err: &walkdir::Error) -> String {
    err.io_error().map_or_else(|| err.to_string(), |io| io.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn paths(items: impl Iterator<Item = ScanItem>) -> Vec<String> {
        items.map(|item| item.path().to_owned()).collect()
    }

    #[test]
    fn walks_in_path_order_and_resumes_after_a_checkpoint() {
        let dir = tempfile::tempdir().unwrap();
        for category in CATEGORIES {
            fs::create_dir(dir.path().join(category)).unwrap();
        }
        for file in ["photos/a/x.jpg", "photos/a.jpg", "photos/b.jpg", "results/r.png", "templates/t.png"] {
            let path = dir.path().join(file);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, b"x").unwrap();
        }
        fs::write(dir.path().join("stray.jpg"), b"x").unwrap();
        let scanner = Scanner::new(dir.path().to_owned());

        let all = paths(scanner.walk(None));
        assert_eq!(all, ["photos/a/x.jpg", "photos/a.jpg", "photos/b.jpg", "results/r.png", "templates/t.png"]);
        for (i, checkpoint) in all.iter().enumerate() {
            assert_eq!(paths(scanner.walk(Some(checkpoint))), all[i + 1..], "after {checkpoint}");
        }
    }

    #[test]
    fn never_descends_into_symlinked_folders() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        fs::write(outside.path().join("secret.jpg"), b"x").unwrap();
        fs::create_dir(dir.path().join("photos")).unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("photos/link")).unwrap();
        let items: Vec<_> = Scanner::new(dir.path().to_owned()).walk(None).collect();
        let files: Vec<_> = items
            .iter()
            .filter_map(|item| match item {
                ScanItem::File(entry) => Some(entry.path.as_str()),
                ScanItem::Error { .. } => None,
            })
            .collect();
        // The link itself is an entry; nothing behind it is.
        assert_eq!(files, ["photos/link"]);
    }
}
