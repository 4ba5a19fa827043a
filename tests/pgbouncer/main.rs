//! janitor through a real PgBouncer, which each test starts on a spare port
//! in front of its own database: Debian 12's `pgbouncer` (1.18), or 1.21+
//! built from Debian's source by `scripts/build-pgbouncer`.
//!
//! ## Layout
//! - [`bouncer`]: the `pgbouncer` process (an ini per test, killed on drop)
//!   and running the `janitor` binary through it.
//! - [`runs`]: what works through PgBouncer and what does not: session
//!   pooling (1.18) and transaction pooling with `max_prepared_statements`
//!   (1.21+) run every operation and a queued job; transaction pooling in
//!   1.18 fails even with sqlx's statement cache off (sqlx 0.8 names every
//!   statement it prepares).

#[path = "../support/mod.rs"]
mod support;

mod bouncer;
mod runs;
