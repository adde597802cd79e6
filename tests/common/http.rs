//! A small HTTP/1.1 client over a raw socket: it sends exactly the bytes a
//! test gives it (malformed requests included) and reads one response.

use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// One response.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The body as JSON (panics with the body if it is not).
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{e}: status {} body {}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// A header's value.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// `Authorization: Basic` for `user` and `password`.
pub fn basic(user: &str, password: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
}

/// Sends `raw` to 127.0.0.1:`port` and reads one response (within 30 s).
pub async fn send_raw(port: u16, raw: &[u8]) -> std::io::Result<Response> {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
        socket.write_all(raw).await?;
        read_response(&mut socket).await
    })
    .await
    .map_err(|_| std::io::Error::other("no response within 30 s"))?
}

/// Sends `raw`, closes the sending half (a client that sends nothing
/// more), and reads one response (within 30 s).
pub async fn send_and_close(port: u16, raw: &[u8]) -> std::io::Result<Response> {
    tokio::time::timeout(Duration::from_secs(30), async {
        let mut socket = TcpStream::connect(("127.0.0.1", port)).await?;
        socket.write_all(raw).await?;
        socket.shutdown().await?;
        read_response(&mut socket).await
    })
    .await
    .map_err(|_| std::io::Error::other("no response within 30 s"))?
}

/// A request with `Connection: close`.
pub async fn request(
    port: u16,
    method: &str,
    path: &str,
    auth: Option<&str>,
    body: Option<&str>,
) -> Response {
    let mut head = format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n");
    if let Some(a) = auth {
        head.push_str(&format!("Authorization: {a}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut raw = head.into_bytes();
    raw.extend_from_slice(body.unwrap_or_default().as_bytes());
    send_raw(port, &raw).await.expect("an HTTP response")
}

/// `POST /v1/query` with `body` as the JSON.
pub async fn query(port: u16, auth: &str, body: &Value) -> Response {
    request(
        port,
        "POST",
        "/v1/query",
        Some(auth),
        Some(&body.to_string()),
    )
    .await
}

/// Reads one response: status line, headers, then a body by
/// Content-Length, chunks, or to the end.
pub async fn read_response<S: tokio::io::AsyncRead + Unpin>(
    socket: &mut S,
) -> std::io::Result<Response> {
    let mut reader = BufReader::new(socket);
    let mut line = String::new();
    reader.read_line(&mut line).await?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("no status line: {line:?}")))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        reader.read_line(&mut line).await?;
        let l = line.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((n, v)) = l.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |n: &str| headers.iter().find(|(h, _)| h == n).map(|(_, v)| v.clone());
    let mut body = Vec::new();
    if let Some(len) = find("content-length").and_then(|v| v.parse::<usize>().ok()) {
        body.resize(len, 0);
        reader.read_exact(&mut body).await?;
    } else if find("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
        loop {
            line.clear();
            reader.read_line(&mut line).await?;
            let size = usize::from_str_radix(line.trim(), 16).unwrap_or(0);
            if size == 0 {
                break;
            }
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).await?;
            body.extend_from_slice(&chunk[..size]);
        }
    } else {
        reader.read_to_end(&mut body).await?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}
