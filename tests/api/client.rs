//! A minimal HTTP/1.1 client over `tokio::net::TcpStream`, enough for these
//! tests: no HTTP client crate is a dependency of the package, the API
//! only needs requests without bodies, and the console's forms only small
//! form-encoded ones ([`form`]). A [`Conn`] keeps its connection alive
//! between requests (the load test needs that); [`request`] sends one
//! request with `Connection: close`.

use std::net::SocketAddr;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::TcpStream;

/// A response, read whole.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    /// Header names are lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body as JSON; fails the test with the body if it is not.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("status {}: body is not JSON ({e}): {}", self.status, self.text()))
    }
}

/// One connection, reused for several requests.
pub struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> std::io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self { stream: BufReader::new(stream) })
    }

    /// Sends `method target` (a path with its query) with an optional
    /// bearer token, and reads the response.
    pub async fn send(&mut self, method: &str, target: &str, token: Option<&str>) -> std::io::Result<Response> {
        self.send_with(method, target, token, &[], "", false).await
    }

    async fn send_with(
        &mut self,
        method: &str,
        target: &str,
        token: Option<&str>,
        headers: &[(&str, &str)],
        body: &str,
        close: bool,
    ) -> std::io::Result<Response> {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: localhost\r\nContent-Length: {}\r\n", body.len());
        if !body.is_empty() {
            head.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        }
        if let Some(token) = token {
            head.push_str(&format!("Authorization: Bearer {token}\r\n"));
        }
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        if close {
            head.push_str("Connection: close\r\n");
        }
        head.push_str("\r\n");
        head.push_str(body);
        self.stream.get_mut().write_all(head.as_bytes()).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> std::io::Result<Response> {
        let status_line = self.line().await?;
        let status = status_line
            .split(' ')
            .nth(1)
            .and_then(|code| code.parse().ok())
            .ok_or_else(|| invalid(format!("bad status line {status_line:?}")))?;
        let mut headers = Vec::new();
        loop {
            let line = self.line().await?;
            if line.is_empty() {
                break;
            }
            let (name, value) = line.split_once(':').ok_or_else(|| invalid(format!("bad header {line:?}")))?;
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
        let find = |name: &str| headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone());
        let body = if let Some(length) = find("content-length") {
            let length: usize = length.parse().map_err(|_| invalid(format!("bad content-length {length:?}")))?;
            let mut body = vec![0; length];
            self.stream.read_exact(&mut body).await?;
            body
        } else if find("transfer-encoding").is_some_and(|v| v.eq_ignore_ascii_case("chunked")) {
            self.chunked().await?
        } else {
            let mut body = Vec::new();
            self.stream.read_to_end(&mut body).await?;
            body
        };
        Ok(Response { status, headers, body })
    }

    async fn chunked(&mut self) -> std::io::Result<Vec<u8>> {
        let mut body = Vec::new();
        loop {
            let size_line = self.line().await?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| invalid(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                while !self.line().await?.is_empty() {}
                return Ok(body);
            }
            let start = body.len();
            body.resize(start + size, 0);
            self.stream.read_exact(&mut body[start..]).await?;
            self.line().await?;
        }
    }

    /// One header line without its CRLF.
    async fn line(&mut self) -> std::io::Result<String> {
        let mut line = String::new();
        if self.stream.read_line(&mut line).await? == 0 {
            return Err(std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "connection closed mid-response"));
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }
}

fn invalid(message: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, message)
}

/// One request on a fresh connection (`Connection: close`).
pub async fn request(addr: SocketAddr, method: &str, target: &str, token: Option<&str>) -> Response {
    request_with(addr, method, target, token, &[]).await
}

/// [`request`] with extra headers.
pub async fn request_with(
    addr: SocketAddr,
    method: &str,
    target: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> Response {
    let mut conn = Conn::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.send_with(method, target, token, headers, "", true).await.unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// One request with a form-encoded body (empty: none) and extra headers,
/// on a fresh connection.
pub async fn form(addr: SocketAddr, method: &str, target: &str, headers: &[(&str, &str)], body: &str) -> Response {
    let mut conn = Conn::connect(addr).await.unwrap_or_else(|e| panic!("connect to {addr}: {e}"));
    conn.send_with(method, target, None, headers, body, true).await.unwrap_or_else(|e| panic!("{method} {target}: {e}"))
}

/// Percent-encodes a query value (cursors carry `:` and `+`).
pub fn encode(value: &str) -> String {
    url::form_urlencoded::byte_serialize(value.as_bytes()).collect()
}
