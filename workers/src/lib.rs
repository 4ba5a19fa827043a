//! # janitor-workers: the cleanup engine
//!
//! Everything that decides what to delete and deletes it, as a library. The
//! `janitor` binary's CLI, its queue worker and its HTTP API are thin layers
//! over [`Engine::run`] and the [`results`] store.
//!
//! ## Layout
//! - [`job`]: the job payload ([`CleanupJob`], [`JobSpec`]) and validated
//!   input ([`SessionId`], [`DaysOld`]). It is also the queue's wire format.
//! - [`engine`]: [`Engine`] (pool, storage root, settings), which runs one
//!   job from start or checkpoint to its result row.
//! - [`jobs`]: one file per operation with its SQL; `rows` is the batch loop
//!   the row-deleting operations share, `orphaned` the one-walk sweep,
//!   `references` the one normalisation of stored paths both use.
//! - [`storage`]: the storage-root wall: path validation; unlinking, the
//!   quarantine's moves and the trash, the inspection of files and the
//!   sweep's walk, all resolved beneath the root without following symlinks.
//! - [`connection`]: one Redis server or a Redis Cluster behind one
//!   connection type; [`layout`] puts every key under one hash tag.
//! - [`progress`]: counters, error items and the checkpoint of a running job;
//!   [`sample`]: a dry run's bounded sample of paths it would delete and
//!   items it skipped, kept in the checkpoint.
//! - [`results`]: the `job_results` table: leases, per-batch progress, the
//!   final result, queries.
//! - [`report`]: the seed-compatible result JSON.
//! - [`retention`]: what of janitor's own records is pruned by age (jobs'
//!   rows, audit log, ticks, dead letters, ids, left-over spills), and the
//!   batched statements that do it; `jobs::prune` is the job.
//!
//! ## Invariants
//! - This crate never depends on the CLI or HTTP layers (no clap, no axum).
//! - An image used by a task that is not finished is never deleted: the
//!   decision and the row's deletion are one transaction under locks on the
//!   image and its tasks; the file goes only after that commit.
//! - A batch's row deletions, counters, unlink intent and checkpoint commit
//!   in one transaction, fenced by the job's lease epoch.
//! - Nothing outside the storage root's category folders (and its trash) is
//!   touched, and no symlink is followed; renames never replace a file.
//! - The orphan sweep decides only on a complete walk.

pub mod admin;
pub mod connection;
mod dedup;
pub mod engine;
pub mod health;
pub mod input;
pub mod job;
pub mod jobs;
pub mod layout;
mod lease;
pub mod producer;
pub mod progress;
pub mod queue;
mod record;
pub mod report;
pub mod results;
pub mod retention;
pub mod sample;
pub mod schedule;
pub mod scheduler;
pub mod settings;
pub mod storage;
pub mod worker;

pub use connection::{RedisConnection, RedisTarget, Timeouts};
pub use engine::{BatchReport, Engine, EngineError, EngineSettings, RunControl, RunOutcome};
pub use job::{CleanupJob, DaysOld, InputError, JobSpec, SessionId};
pub use results::JobRecord;

/// Migrations for the app's tables (created only if missing), the cleanup
/// indexes and `job_results`.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");
