//! A real `janitor serve` child process, and the few HTTP/1.1 requests the
//! console bench sends it: each on a fresh loopback connection, as a
//! browser opening a page after a pause would.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// A response, read whole.
pub struct Response {
    pub status: u16,
    head: String,
    pub body: String,
}

impl Response {
    /// The first value of a header (the name in lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }
}

/// Sends one request (`body`: a form, or empty) and reads the response.
pub async fn request(addr: SocketAddr, method: &str, path: &str, cookie: &str, body: &str) -> anyhow::Result<Response> {
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n");
    if !cookie.is_empty() {
        head.push_str(&format!("Cookie: {cookie}\r\n"));
    }
    if !body.is_empty() {
        head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
    }
    head.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    stream.write_all(head.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap_or((raw.as_str(), ""));
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).context("no HTTP status line")?;
    Ok(Response { status, head: head.to_owned(), body: body.to_owned() })
}

/// `janitor serve` on a loopback port, with one admin token.
pub struct Serve {
    child: tokio::process::Child,
    pub addr: SocketAddr,
}

/// What the served process is given.
pub struct ServeEnv<'a> {
    pub database_url: &'a str,
    pub redis_url: &'a str,
    pub queue: &'a str,
    /// `name=token`, as in `JANITOR_ADMIN_TOKENS`.
    pub admin_tokens: &'a str,
    pub storage_root: &'a std::path::Path,
}

impl Serve {
    pub async fn start(env: &ServeEnv<'_>) -> anyhow::Result<Self> {
        // The binary of the same build, as the other benchmarks' workers.
        let janitor = std::env::current_exe()?.with_file_name("janitor");
        anyhow::ensure!(
            janitor.is_file(),
            "{} is missing: build it with the bench (cargo build --release -p janitor -p janitor-bench)",
            janitor.display()
        );
        // A free port: bound, read, released for the child to bind.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
        let child = tokio::process::Command::new(janitor)
            .arg("serve")
            .env("DATABASE_URL", env.database_url)
            .env("REDIS_URL", env.redis_url)
            .env("JANITOR_QUEUE", env.queue)
            .env("JANITOR_LISTEN", addr.to_string())
            .env("JANITOR_ADMIN_TOKENS", env.admin_tokens)
            .env("JANITOR_STORAGE_ROOT", env.storage_root)
            .env_remove("JANITOR_CONFIG")
            .env("RUST_LOG", "warn")
            .kill_on_drop(true)
            .spawn()?;
        let serve = Self { child, addr };
        serve.ready().await?;
        Ok(serve)
    }

    /// Waits until `/healthz` answers (at most 30 s).
    async fn ready(&self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            match request(self.addr, "GET", "/healthz", "", "").await {
                Ok(response) if response.status == 200 => return Ok(()),
                _ if started.elapsed() > Duration::from_secs(30) => anyhow::bail!("janitor serve did not come up"),
                _ => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    }

    /// Logs in with a token through the form, as a browser does, and
    /// returns the session's `Cookie` value.
    pub async fn login(&self, token: &str) -> anyhow::Result<String> {
        let form = request(self.addr, "GET", "/login", "", "").await?;
        let login_cookie = form.header("set-cookie").context("no login form cookie")?;
        let login_cookie = login_cookie.split(';').next().unwrap_or_default();
        let csrf = form.body.split(r#"name="csrf" value=""#).nth(1).and_then(|rest| rest.split('"').next());
        let csrf = csrf.context("no csrf field in the login form")?;
        let token = url::form_urlencoded::byte_serialize(token.as_bytes()).collect::<String>();
        let body = format!("token={token}&csrf={csrf}");
        let response = request(self.addr, "POST", "/login", login_cookie, &body).await?;
        anyhow::ensure!(response.status == 303, "POST /login answered {}: {}", response.status, response.body);
        let cookie = response.header("set-cookie").context("no session cookie")?;
        Ok(cookie.split(';').next().unwrap_or_default().to_owned())
    }

    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(pid) = self.child.id() {
            tokio::process::Command::new("kill").arg("-TERM").arg(pid.to_string()).status().await?;
        }
        self.child.wait().await?;
        Ok(())
    }
}
