//! The console's pages, one file per area.

pub mod activity;
pub mod audit;
pub mod chart;
pub mod dead;
pub mod jobs;
pub mod overview;
pub mod plan;
mod plan_sample;
pub mod reclaimable;
pub mod restore;
pub mod schedules;
