//! `janitor prune` and the daily prune job: janitor's own records pruned by
//! age, against real Postgres, real Redis (under the test's own key prefix)
//! and the test's own storage root. Each test waits on conditions, never on
//! fixed sleeps.
//!
//! ## Layout
//! - [`seed`]: records of every kind, at chosen ages, and reading them back.
//! - [`ages`]: old records of each kind go and young ones stay; unfinished
//!   jobs are never touched; the retention settings; a dry run.
//! - [`queue`]: dead letters, the ids hash, and the scheduler's daily prune
//!   carried out by a worker.
//! - [`intents`]: left-over unlink intents are carried out before they go.
//! - [`batches`]: a large table goes in bounded batches.
//! - [`sessions`]: console sessions past their expiry go, live ones stay.

#[path = "../support/mod.rs"]
mod support;

#[path = "../queue/harness.rs"]
mod harness;

mod seed;

mod ages;
mod batches;
mod intents;
mod queue;
mod sessions;
