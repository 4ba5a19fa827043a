//! Validated storage paths: the first half of the storage-root wall.
//!
//! Every path that reaches the file system goes through [`RelativePath::parse`]
//! first. The check is purely lexical; the second half of the wall is in
//! [`super::Storage`], which resolves the path with `RESOLVE_BENEATH` and
//! `RESOLVE_NO_SYMLINKS` so that nothing the check cannot see (a symlink
//! planted inside the root) can lead outside it either.

use std::fmt;

/// The folders under the storage root that hold images. Nothing outside them
/// is ever scanned or deleted.
pub const CATEGORIES: [&str; 4] = ["photos", "templates", "preprocessed", "results"];

/// Linux's limits: a name is at most 255 bytes, a path at most 4096.
const MAX_NAME_BYTES: usize = 255;
const MAX_PATH_BYTES: usize = 4095;

/// A path relative to the storage root that names a file inside one of the
/// [`CATEGORIES`] folders, in plain `/`-separated form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RelativePath(String);

/// Why a stored path was refused. The message is recorded as the error item.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("path is empty")]
    Empty,
    #[error("path is absolute")]
    Absolute,
    #[error("path contains a NUL byte")]
    Nul,
    #[error("path contains a backslash")]
    Backslash,
    #[error("path contains a control character")]
    Control,
    #[error("path has an empty, `.` or `..` component")]
    BadComponent,
    #[error("path is longer than the file system allows")]
    TooLong,
    #[error("path is outside the category folders (photos, templates, preprocessed, results)")]
    OutsideCategories,
}

impl RelativePath {
    /// Checks a `storage_path` from the database (or a path found by the
    /// scan) and returns it only if it stays inside a category folder.
    pub fn parse(raw: &str) -> Result<Self, PathError> {
        Self::check(raw)?;
        Ok(Self(raw.to_owned()))
    }

    /// What [`RelativePath::parse`] decides, without keeping the path.
    pub fn check(raw: &str) -> Result<(), PathError> {
        if raw.is_empty() {
            return Err(PathError::Empty);
        }
        if raw.contains('\0') {
            return Err(PathError::Nul);
        }
        if raw.starts_with('/') {
            return Err(PathError::Absolute);
        }
        if raw.contains('\\') {
            return Err(PathError::Backslash);
        }
        if raw.chars().any(char::is_control) {
            return Err(PathError::Control);
        }
        if raw.len() > MAX_PATH_BYTES {
            return Err(PathError::TooLong);
        }
        let mut components = raw.split('/');
        let first = components.next().unwrap_or_default();
        let mut depth = 1;
        for name in components {
            if name.is_empty() || name == "." || name == ".." {
                return Err(PathError::BadComponent);
            }
            if name.len() > MAX_NAME_BYTES {
                return Err(PathError::TooLong);
            }
            depth += 1;
        }
        // A category folder itself (depth 1) is never a deletable file.
        if !CATEGORIES.contains(&first) || depth < 2 {
            return Err(PathError::OutsideCategories);
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key `janitor_path_key` gives `raw`, when janitor knows it without
    /// asking Postgres: a plain ASCII path that [`RelativePath::check`]
    /// accepts is its own key. Such a path has no empty, `.` or `..`
    /// component, no backslash or control character, and starts with a
    /// category folder, which is the function's fast path (and ASCII is
    /// always in NFC). A name beyond ASCII is left to Postgres, whose Unicode
    /// tables decide its normal form. (`tests/engine/shared.rs` checks this
    /// against the function.)
    pub fn ascii_key(raw: &str) -> Option<&str> {
        (raw.is_ascii() && Self::check(raw).is_ok()).then_some(raw)
    }

    /// Splits into the parent folder (never empty: at least the category) and
    /// the file name.
    pub fn split_parent(&self) -> (&str, &str) {
        // `parse` guarantees at least one `/`.
        self.0.rsplit_once('/').unwrap_or(("", &self.0))
    }
}

impl fmt::Display for RelativePath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_plain_paths_inside_categories() {
        let path = RelativePath::parse("photos/2026/11/26/ab12.jpg").unwrap();
        assert_eq!(path.split_parent(), ("photos/2026/11/26", "ab12.jpg"));
        assert!(RelativePath::parse("results/x.png").is_ok());
        assert!(RelativePath::parse("templates/ünïcode 名前.jpg").is_ok());
    }

    #[test]
    fn refuses_escapes_and_oddities() {
        let cases = [
            ("", PathError::Empty),
            ("/etc/passwd", PathError::Absolute),
            ("photos/../../etc/passwd", PathError::BadComponent),
            ("photos/./x.jpg", PathError::BadComponent),
            ("photos//x.jpg", PathError::BadComponent),
            ("photos/x/", PathError::BadComponent),
            ("photos\\..\\x", PathError::Backslash),
            ("photos/x\0.jpg", PathError::Nul),
            ("photos/x\n.jpg", PathError::Control),
            ("photos", PathError::OutsideCategories),
            ("photosx/a.jpg", PathError::OutsideCategories),
            (".janitor-trash/a.jpg", PathError::OutsideCategories),
            ("../photos/a.jpg", PathError::OutsideCategories),
        ];
        for (raw, want) in cases {
            assert_eq!(RelativePath::parse(raw), Err(want), "{raw:?}");
        }
        let long_name = format!("photos/{}", "a".repeat(256));
        assert_eq!(RelativePath::parse(&long_name), Err(PathError::TooLong));
    }
}
