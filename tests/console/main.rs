//! The operations console in a real browser: Debian's `chromium`, driven
//! through `chromedriver` (WebDriver) with `fantoccini`, against a real
//! `janitor serve` and `janitor worker`, Postgres and Redis. Each test has
//! its own database, storage root, Redis key prefix, ports and browser
//! profile.
//!
//! - [`browser`]: `chromedriver` on a spare port and a headless session.
//! - [`console`]: the server and worker processes, and logging in.
//! - [`flows`]: what an operator does: log in, watch a job's progress move,
//!   cancel a job, log out; a read-only token and a POST without the CSRF
//!   token change nothing.
//! - [`dead_letters`]: a job dead-lettered by a real worker, found on the
//!   dead letters page, retried there, and run again to completion.
//! - [`plan`]: plan a dry run, see its numbers and sample, run it for real.

#[path = "../support/mod.rs"]
mod support;

#[path = "../queue/harness.rs"]
mod harness;

mod browser;
mod console;
mod dead_letters;
mod flows;
mod plan;
