//! The `janitor` binary end to end: each test runs the real executable
//! against its own database (from `#[sqlx::test]`) and its own storage root,
//! then checks its exit code, its output and what it did to rows and files.
//!
//! ## Layout
//! - [`binary`]: running the executable and reading its output.
//! - [`input`]: bad input exits with 2 and changes nothing.
//! - [`infrastructure`]: an unreachable database, and `janitor migrate`.
//! - [`expired`]: `run expired`: the result JSON, item errors, dry runs and
//!   re-running a finished job.
//! - [`operations`]: `run session`, `run old-results` and `run all`.
//! - [`reports`]: `janitor stats` and `janitor results`.
//! - [`guards`]: the orphan ratio guard, quarantine and restore, `--limit`.
//! - [`stalls`]: a paced run stopped past the idle-transaction timeout.
//! - [`trash`]: `janitor restore` refuses symlinks and never overwrites.

#[path = "../support/mod.rs"]
mod support;

mod binary;
mod config;
mod demo;

mod expired;
mod guards;
mod infrastructure;
mod input;
mod operations;
mod reports;
mod stalls;
mod trash;
