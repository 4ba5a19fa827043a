//! `cleanup_all`: expired images, then old results, then orphaned files, as
//! phases of one job with one checkpoint. The result nests each phase's own
//! result and the totals.
//!
//! Resumes in the phase it stopped in; finished phases are not rerun.

use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{expired, old_results, Phase};
use crate::job::DaysOld;

pub(crate) fn phases(as_of: DateTime<Utc>, days_old: DaysOld, min_age_secs: u64) -> Vec<Phase> {
    vec![
        Phase::Rows(expired::selector(as_of)),
        Phase::Rows(old_results::selector(as_of, days_old)),
        Phase::Orphans { min_age: Duration::from_secs(min_age_secs) },
    ]
}
