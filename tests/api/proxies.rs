//! The failed-login limit behind a reverse proxy (`JANITOR_TRUSTED_PROXIES`):
//! `X-Forwarded-For` names the client only when the connection comes from a
//! trusted proxy. These tests connect from 127.0.0.1, which plays the proxy
//! when it is trusted.

use sqlx::PgPool;

use crate::client;
use crate::console::login;
use crate::server::{Api, ApiConfig, BASE, OPS};

const WRONG: &str = "ops-token-0123456789abcdeX";

/// Three failures an hour per address, and the given trusted proxies.
fn config(trusted_proxies: &str) -> ApiConfig {
    ApiConfig {
        rate_limits: "auth_failure=3/h".to_owned(),
        trusted_proxies: trusted_proxies.to_owned(),
        ..ApiConfig::default()
    }
}

/// The status of a login with `token` whose request says it was forwarded
/// for `forwarded_for`.
async fn login_as(api: &Api, token: &str, forwarded_for: &str) -> u16 {
    login(api, token, &[("X-Forwarded-For", forwarded_for)]).await.status
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn without_trusted_proxies_a_forwarded_address_is_ignored(pool: PgPool) {
    let api = Api::with(pool, config("")).await;
    // A guesser that claims a new address on every try is still one
    // address: its own.
    let mut statuses = Vec::new();
    for n in 1..=5 {
        statuses.push(login_as(&api, WRONG, &format!("198.51.100.{n}")).await);
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    assert_eq!(login_as(&api, OPS.1, "203.0.113.77").await, 429, "a fresh claimed address does not help");
    // Audit rows name the peer only: a claimed address is not believed.
    let remotes: Vec<String> =
        sqlx::query_scalar("SELECT remote FROM audit_log WHERE path = '/login'").fetch_all(api.pool()).await.unwrap();
    assert!(
        !remotes.is_empty() && remotes.iter().all(|r| r.starts_with("127.0.0.1:") && !r.contains("via")),
        "{remotes:?}"
    );
    api.finish().await;
}

#[sqlx::test(migrator = "janitor_workers::MIGRATOR")]
async fn behind_a_trusted_proxy_each_forwarded_client_has_its_own_allowance(pool: PgPool) {
    let api = Api::with(pool, config("127.0.0.1, 10.0.0.0/8")).await;
    let guesser = "198.51.100.1";
    let statuses = [
        login_as(&api, WRONG, guesser).await,
        login_as(&api, WRONG, guesser).await,
        login_as(&api, WRONG, guesser).await,
        login_as(&api, OPS.1, guesser).await,
    ];
    assert_eq!(statuses, [401, 401, 401, 429], "the guesser is limited by its forwarded address");
    // Another client behind the same proxy logs in.
    assert_eq!(login_as(&api, OPS.1, "198.51.100.2").await, 303);
    // The guesser cannot escape by writing an address of its own in front
    // of what the proxies appended: the rightmost untrusted entry counts.
    assert_eq!(login_as(&api, OPS.1, &format!("203.0.113.9, {guesser}, 10.1.2.3")).await, 429);
    assert_eq!(login_as(&api, OPS.1, &format!("{guesser}, 203.0.113.9")).await, 303, "here 203.0.113.9 is the client");

    // The API's gate charges the same client.
    let stats = |forwarded_for: &'static str| {
        let target = format!("{BASE}/stats");
        async move {
            let headers = [("X-Forwarded-For", forwarded_for)];
            client::request_with(api.addr, "GET", &target, Some(OPS.1), &headers).await.status
        }
    };
    assert_eq!(stats("198.51.100.1").await, 429);
    assert_eq!(stats("198.51.100.2").await, 200);
    // Audit rows name the client, and the proxy it came through.
    let remotes = |path: &'static str| {
        sqlx::query_scalar::<_, String>(
            "SELECT remote FROM audit_log WHERE path = $1 AND status IN (200, 303) ORDER BY id",
        )
        .bind(path)
        .fetch_all(api.pool())
    };
    let logins = remotes("/login").await.unwrap();
    assert!(logins[0].starts_with("198.51.100.2 via 127.0.0.1:"), "{logins:?}");
    assert!(logins[1].starts_with("203.0.113.9 via 127.0.0.1:"), "{logins:?}");
    let stats_rows = remotes("/api/v1/admin/cleanup/stats").await.unwrap();
    assert!(stats_rows[0].starts_with("198.51.100.2 via 127.0.0.1:"), "{stats_rows:?}");
    api.finish().await;
}
