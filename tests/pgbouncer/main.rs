//! janitor through a real PgBouncer (Debian's `pgbouncer`, 1.18 here), which
//! each test starts on a spare port in front of its own database.
//!
//! ## Layout
//! - [`bouncer`]: the `pgbouncer` process (an ini per test, killed on drop)
//!   and running the `janitor` binary through it.
//! - [`runs`]: what works through PgBouncer and what does not: session
//!   pooling runs every operation and a queued job; transaction pooling
//!   fails even with sqlx's statement cache off (sqlx 0.8 names every
//!   statement it prepares), which is why janitor needs session pooling or
//!   PgBouncer 1.21+ with `max_prepared_statements`.

#[path = "../support/mod.rs"]
mod support;

mod bouncer;
mod runs;
