//! The cleanup engine against real Postgres and a temporary storage root.
//! Each test has its own database (`#[sqlx::test]` applies the migrations)
//! and its own storage root.

#[path = "../support/mod.rs"]
mod support;

mod harness;

mod concurrency;
mod estimate;
mod guards;
mod in_use;
mod intents;
mod operations;
mod resume;
mod safety;
mod sample;
mod schema;
mod shared;
mod trash;
