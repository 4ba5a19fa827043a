//! A private `chromedriver` and a headless Chromium session through it.

use std::net::TcpListener;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::json;
use tokio::process::{Child, Command};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// A running `chromedriver` (killed on drop) with one browser session.
pub struct Browser {
    pub client: Client,
    _driver: Child,
    _profile: tempfile::TempDir,
}

impl Browser {
    /// Starts `chromedriver` on a spare port and opens a headless Chromium
    /// with a profile of its own. Fails the test if either is missing.
    pub async fn start() -> Self {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).is_file(),
                "{binary} is missing: the console tests need Debian's browser (apt-get install chromium chromium-driver)"
            );
        }
        let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("chromedriver starts");
        let profile = tempfile::tempdir().unwrap();
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({
                "binary": CHROMIUM,
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--window-size=1280,900", format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        let url = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(HttpConnector::new()).capabilities(capabilities.clone()).connect(&url).await {
                Ok(client) => break client,
                Err(err) => {
                    assert!(Instant::now() < deadline, "no browser session through chromedriver within 30 s: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        Self { client, _driver: driver, _profile: profile }
    }

    /// Waits (at most 20 s) for the element that `css` selects.
    pub async fn find(&self, css: &str) -> fantoccini::elements::Element {
        self.client
            .wait()
            .at_most(Duration::from_secs(20))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|err| panic!("no element {css:?} within 20 s: {err}"))
    }

    /// Waits (at most 20 s) until the element that `css` selects has a text
    /// that `wanted` accepts, and returns it. Right after a click the old
    /// page may still be shown, or be replaced while it is read: both are
    /// waited out.
    pub async fn wait_for_text(&self, css: &str, wanted: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut seen = String::new();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(text) = element.text().await {
                    if wanted(&text) {
                        return text;
                    }
                    seen = text;
                }
            }
            assert!(Instant::now() < deadline, "{css:?} did not show the expected text within 20 s; last: {seen:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Whether an element that `css` selects is on the page now.
    pub async fn has(&self, css: &str) -> bool {
        !self.client.find_all(Locator::Css(css)).await.unwrap().is_empty()
    }

    /// The text of the element that `css` selects (waiting for it).
    pub async fn text(&self, css: &str) -> String {
        self.find(css).await.text().await.unwrap()
    }

    /// The path of the page shown now.
    pub async fn path(&self) -> String {
        self.client.current_url().await.unwrap().path().to_owned()
    }

    /// Saves a PNG of the page: into `docs/` when
    /// `JANITOR_CONSOLE_SCREENSHOTS=docs` (how the README's pictures are
    /// made), otherwise under the target directory.
    pub async fn screenshot(&self, name: &str) {
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a screenshot is a PNG");
        let dir = if std::env::var("JANITOR_CONSOLE_SCREENSHOTS").as_deref() == Ok("docs") {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("docs")
        } else {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("target/console-screenshots")
        };
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{name}.png")), png).unwrap();
    }

    pub async fn close(self) {
        let _ = self.client.close().await;
    }
}
