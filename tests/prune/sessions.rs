//! Console sessions past their expiry go with every prune; sessions that
//! can still log someone in stay, and a dry run only counts.

use sqlx::PgPool;

use crate::harness::Env;
use crate::seed::{self, counts, pruned};

/// A console session row (as `janitor serve` writes one at a login) that
/// expires `expires_in_secs` from now (negative: expired that long ago).
/// Returns its first id byte, which names it in [`sessions`].
async fn session(pool: &PgPool, tag: u8, expires_in_secs: f64) -> u8 {
    sqlx::query(
        "INSERT INTO console_sessions (id_hash, token_name, token_hash, read_only, csrf, expires_at)
         VALUES ($1, 'ops', $2, false, 'csrf', now() + make_interval(secs => $3))",
    )
    .bind(vec![tag; 32])
    .bind(vec![0_u8; 32])
    .bind(expires_in_secs)
    .execute(pool)
    .await
    .unwrap();
    tag
}

/// The sessions left, by the tag [`session`] gave them, in order.
async fn sessions(pool: &PgPool) -> Vec<u8> {
    let ids: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT id_hash FROM console_sessions ORDER BY id_hash").fetch_all(pool).await.unwrap();
    ids.iter().map(|id| id[0]).collect()
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn expired_console_sessions_go_and_live_ones_stay(pool: PgPool) {
    let env = Env::new(pool);
    let pool = &env.pool;
    // Expired a month, a day and a minute ago; expiring in a minute and in
    // a week. Nobody logs in meanwhile, so nothing else deletes them.
    let expired = [session(pool, 1, -30.0 * 86_400.0).await, session(pool, 2, -86_400.0).await];
    let just_expired = session(pool, 3, -60.0).await;
    let live = [session(pool, 4, 60.0).await, session(pool, 5, 7.0 * 86_400.0).await];
    assert_eq!(sessions(pool).await, [expired[0], expired[1], just_expired, live[0], live[1]]);

    let dry = seed::prune(&env, &["--dry-run"], 0).await;
    assert_eq!(pruned(&dry), counts(&[("console_sessions", 3)]));
    assert_eq!(sessions(pool).await.len(), 5, "a dry run deletes no session");

    // In batches smaller than what goes, so the keyset on the expiry is
    // followed from one batch to the next.
    let real = seed::prune(&env, &["--batch-size", "2"], 0).await;
    assert_eq!(pruned(&real), counts(&[("console_sessions", 3)]));
    assert_eq!(sessions(pool).await, live, "only sessions past their expiry go");

    let again = seed::prune(&env, &[], 0).await;
    assert_eq!(pruned(&again), counts(&[]), "a second run finds nothing left");
    env.cleanup_keys().await;
}
