//! A dry run's sample: the first paths it would delete and the first items
//! it left because they are in use, so that whoever plans a cleanup sees
//! what it would take and what it would spare, not only how much.
//!
//! The sample lives in the checkpoint, so it is written with every batch,
//! survives a resumed run, and reaches the result JSON as `sample`. It is
//! bounded whatever the store holds: at most [`SAMPLE_CAP`] items of each
//! kind per operation (a `cleanup_all` keeps up to that many per phase), and
//! each path is cut to [`PATH_CAP`] bytes.

use serde::{Deserialize, Serialize};

/// The most items of each kind kept per operation.
pub const SAMPLE_CAP: usize = 20;

/// The longest path kept, in bytes; a longer one is cut and ends in `…`.
pub const PATH_CAP: usize = 512;

/// What a dry run would delete and what it skipped, both in the order the
/// run met them (image id for row operations, path for the orphan sweep).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    #[serde(default)]
    pub would_delete: Vec<SampleItem>,
    /// Rows left alone: used by a task that is not finished, or sharing
    /// their file with a row that stays (`reason` says which).
    #[serde(default)]
    pub skipped: Vec<SampleItem>,
}

/// One sampled image row or file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SampleItem {
    /// The phase it belongs to, as error items name it.
    #[serde(default)]
    pub operation: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_id: Option<i64>,
    pub path: String,
    /// Its size in bytes (the row's `file_size`, or the file's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<i64>,
    /// Why it was skipped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl SampleItem {
    /// An item of `path`, its operation filled in when it is added.
    pub fn new(image_id: Option<i64>, path: &str) -> Self {
        Self { operation: String::new(), image_id, path: bounded(path), size: None, reason: None }
    }

    pub fn size(mut self, size: i64) -> Self {
        self.size = Some(size);
        self
    }

    pub fn reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

impl Sample {
    pub fn is_empty(&self) -> bool {
        self.would_delete.is_empty() && self.skipped.is_empty()
    }

    /// Adds one batch's items of `operation`, up to the cap. The iterators
    /// are read only as far as there is room, so a large batch costs
    /// nothing once the sample is full.
    pub fn add(
        &mut self,
        operation: &str,
        would_delete: impl IntoIterator<Item = SampleItem>,
        skipped: impl IntoIterator<Item = SampleItem>,
    ) {
        fill(&mut self.would_delete, operation, would_delete);
        fill(&mut self.skipped, operation, skipped);
    }

    /// Drops the items of `operation`: its counts start again (a dry walk
    /// that lost its place walks again).
    pub fn forget(&mut self, operation: &str) {
        self.would_delete.retain(|item| item.operation != operation);
        self.skipped.retain(|item| item.operation != operation);
    }
}

fn fill(list: &mut Vec<SampleItem>, operation: &str, items: impl IntoIterator<Item = SampleItem>) {
    let room = SAMPLE_CAP.saturating_sub(list.iter().filter(|item| item.operation == operation).count());
    list.extend(items.into_iter().take(room).map(|item| SampleItem { operation: operation.to_owned(), ..item }));
}

/// Why an image some unfinished tasks use was skipped, naming their
/// statuses: "in use by a pending task", "in use by 2 tasks (pending, processing)".
pub fn in_use_reason<'a>(statuses: impl IntoIterator<Item = Option<&'a str>>) -> String {
    let statuses: Vec<&str> = statuses.into_iter().map(|status| status.unwrap_or("unknown")).collect();
    match statuses.as_slice() {
        [one] => format!("in use by a {one} task"),
        many => {
            let mut names = many.to_vec();
            names.sort_unstable();
            names.dedup();
            format!("in use by {} tasks ({})", many.len(), names.join(", "))
        }
    }
}

fn bounded(path: &str) -> String {
    if path.len() <= PATH_CAP {
        return path.to_owned();
    }
    let mut end = PATH_CAP;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(prefix: &str, n: usize) -> Vec<SampleItem> {
        (0..n).map(|i| SampleItem::new(Some(i as i64), &format!("{prefix}/{i}.jpg"))).collect()
    }

    #[test]
    fn the_sample_is_bounded_per_operation_and_keeps_the_first_items() {
        let mut sample = Sample::default();
        sample.add("cleanup_expired_images", items("photos", 15), items("skipped", 3));
        sample.add("cleanup_expired_images", items("more", 15), Vec::new());
        sample.add("cleanup_orphaned_files", items("results", 30), Vec::new());
        let expired: Vec<_> =
            sample.would_delete.iter().filter(|item| item.operation == "cleanup_expired_images").collect();
        assert_eq!(expired.len(), SAMPLE_CAP);
        assert_eq!((expired[0].path.as_str(), expired[19].path.as_str()), ("photos/0.jpg", "more/4.jpg"));
        assert_eq!(sample.would_delete.len(), 2 * SAMPLE_CAP, "each phase has its own room");
        assert_eq!(sample.skipped.len(), 3);
        sample.forget("cleanup_orphaned_files");
        assert_eq!(sample.would_delete.len(), SAMPLE_CAP);
    }

    #[test]
    fn long_paths_are_cut_and_reasons_name_the_statuses() {
        let long = "é".repeat(PATH_CAP);
        let item = SampleItem::new(None, &long);
        assert!(item.path.len() <= PATH_CAP + '…'.len_utf8() && item.path.ends_with('…'));
        assert_eq!(in_use_reason([Some("pending")]), "in use by a pending task");
        assert_eq!(
            in_use_reason([Some("processing"), None, Some("pending"), Some("pending")]),
            "in use by 4 tasks (pending, processing, unknown)"
        );
    }
}
