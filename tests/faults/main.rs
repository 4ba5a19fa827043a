//! Faults from outside the process, against real services: Postgres
//! restarted under a running worker, storage that misbehaves during a run,
//! secrets that must never reach logs or errors, a worker with only the
//! grants it needs, and a bounded soak with a worker killed midway.
//!
//! Every test has its own database, storage root and Redis key prefix (and,
//! where it must restart or lock down a service, its own server or role).

#[path = "../support/mod.rs"]
mod support;

#[path = "../queue/harness.rs"]
mod harness;

mod fixtures;
mod postgres;
mod process;

mod privileges;
mod restart;
mod secrets;
mod soak;
mod storage;
