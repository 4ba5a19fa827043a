//! The `janitor serve` process the browser talks to, and logging in.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use crate::browser::Browser;
use crate::harness::{wait_until, Env, Worker};

/// An operator's token, and a read-only one (`name:ro=token`).
pub const OPS: (&str, &str) = ("ops", "ops-console-token-0123456789");
pub const VIEWER: (&str, &str) = ("viewer", "viewer-console-token-98765");

/// A running `janitor serve` with both tokens; stopped on drop.
pub struct Console {
    pub addr: SocketAddr,
    _server: Worker,
}

impl Console {
    pub async fn start(env: &Env) -> Self {
        let addr = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let tokens = format!("{}={},{}:ro={}", OPS.0, OPS.1, VIEWER.0, VIEWER.1);
        let server = env.spawn(&["serve", "--listen", &addr.to_string()], &[("JANITOR_ADMIN_TOKENS", tokens.as_str())]);
        wait_until("janitor serve listens", Duration::from_secs(30), || async move {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await;
        Self { addr, _server: server }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Logs in through the login form and lands on the overview.
    pub async fn log_in(&self, browser: &Browser, token: &str) {
        browser.client.goto(&self.url("/login")).await.unwrap();
        browser.find("form#login input#token").await.send_keys(token).await.unwrap();
        browser.find("form#login button[type=submit]").await.click().await.unwrap();
        browser.wait_for_text("main h1", |text| text == "Overview").await;
        assert_eq!(browser.path().await, "/");
    }
}
