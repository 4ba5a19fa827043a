//! The admin HTTP API end to end: a real server on a loopback port (in
//! process, or the `janitor serve` binary), real Postgres, real Redis and,
//! where jobs must finish, a real `janitor worker`. Each test has its own
//! database, storage root and Redis key prefix.
//!
//! - `client`: a minimal HTTP/1.1 client; `server`: the in-process server.
//! - `endpoints`: every endpoint on its happy path, `wait=true`, paging.
//! - `refusals`: 401, 422 and 429, none of which enqueue anything.
//! - `audit`, `metrics`, `dedup`: the audit trail, `/metrics`, session dedup.
//! - `control`: cancel, retry, dead letters, read-only tokens.
//! - `console`: the browser console over HTTP: login, sessions, CSRF.
//! - `proxies`: the failed-login limit behind trusted reverse proxies.
//! - `console_pages`: the console's schedules, audit log, charts and the
//!   restore of a quarantine (API and console).
//! - `plan`: "Plan a cleanup": a dry run, its sample, then the same job for
//!   real; bad input and read-only tokens refused.
//! - `process`: the `janitor serve` binary, including its refusals to start.
//! - `load`: a bounded load test that prints the requests per second.

#[path = "../support/mod.rs"]
mod support;

#[path = "../queue/harness.rs"]
mod harness;

mod client;
mod server;

mod audit;
mod console;
mod console_pages;
mod control;
mod dedup;
mod endpoints;
mod load;
mod metrics;
mod plan;
mod process;
mod proxies;
mod refusals;
