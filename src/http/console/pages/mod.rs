//! The console's pages, one file per area.

pub mod dead;
pub mod jobs;
pub mod overview;
