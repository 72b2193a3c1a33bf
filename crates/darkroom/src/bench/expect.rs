//! A POST that asks `Expect: 100-continue` and sends its body only when
//! told to, as curl does for large uploads: a server that refuses on the
//! headers (429 on its expected wait, 413 on `Content-Length`) is never
//! sent the body. reqwest (hyper's client) does not wait for the 100, so
//! `--expect-continue` speaks HTTP/1.1 itself, one connection a request.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use bytes::Bytes;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// A final answer: its status, `Retry-After` and body.
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
    pub body: Vec<u8>,
}

/// How long to wait for the 100 before sending anyway (curl waits 1 s).
const CONTINUE_WAIT: Duration = Duration::from_secs(1);

/// `http://host:port/path` split into the address and the path.
pub fn split_url(url: &str) -> anyhow::Result<(String, String)> {
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| anyhow!("not an http:// URL: {url}"))?;
    let (host, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    Ok((host.to_string(), path.to_string()))
}

/// Posts `body` as JSON to `path` on `host`.
pub async fn post(host: &str, path: &str, body: &Bytes) -> anyhow::Result<Answer> {
    let stream = TcpStream::connect(host)
        .await
        .with_context(|| format!("connecting to {host}"))?;
    stream.set_nodelay(true)?;
    let mut stream = BufReader::new(stream);
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.get_mut().write_all(head.as_bytes()).await?;
    let first = match tokio::time::timeout(CONTINUE_WAIT, read_head(&mut stream)).await {
        Ok(head) => Some(head?),
        Err(_) => None,
    };
    let (mut status, mut headers) = match first {
        Some((100, _)) | None => {
            stream.get_mut().write_all(body).await?;
            read_head(&mut stream).await?
        }
        Some(head) => head,
    };
    // A 100 that came after the wait (the body went anyway) is not the answer.
    while (100..200).contains(&status) {
        (status, headers) = read_head(&mut stream).await?;
    }
    let length = header(&headers, "content-length")
        .map(|v| v.parse::<usize>())
        .transpose()
        .context("a bad Content-Length")?;
    let mut answer = Vec::new();
    match length {
        Some(n) => {
            answer.resize(n, 0);
            stream.read_exact(&mut answer).await?;
        }
        None => {
            stream.read_to_end(&mut answer).await?;
        }
    }
    Ok(Answer {
        status,
        retry_after: header(&headers, "retry-after").map(str::to_string),
        body: answer,
    })
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// Reads a status line and headers; skips nothing (a 100 is returned).
async fn read_head(
    stream: &mut BufReader<TcpStream>,
) -> anyhow::Result<(u16, Vec<(String, String)>)> {
    let mut line = String::new();
    if stream.read_line(&mut line).await? == 0 {
        bail!("the server closed the connection before answering");
    }
    let status = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| anyhow!("not an HTTP status line: {line:?}"))?;
    let mut headers = Vec::new();
    loop {
        line.clear();
        if stream.read_line(&mut line).await? == 0 {
            bail!("the server closed the connection in the headers");
        }
        let trimmed = line.trim_end();
        if trimmed.is_empty() {
            return Ok((status, headers));
        }
        if let Some((k, v)) = trimmed.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:8080/v1/analyze").unwrap(),
            ("127.0.0.1:8080".to_string(), "/v1/analyze".to_string())
        );
        assert!(split_url("https://x").is_err());
    }

    #[tokio::test]
    async fn a_refusal_on_the_headers_is_read_without_sending_the_body() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut seen = vec![0u8; 4096];
            let n = socket.read(&mut seen).await.unwrap();
            socket
                .write_all(b"HTTP/1.1 429 Too Many Requests\r\nRetry-After: 2\r\nContent-Length: 2\r\n\r\n{}")
                .await
                .unwrap();
            // Whatever the client sends after the headers is the body.
            let mut rest = Vec::new();
            let _ = socket.read_to_end(&mut rest).await;
            (String::from_utf8_lossy(&seen[..n]).to_string(), rest.len())
        });
        let answer = post(&addr, "/v1/analyze", &Bytes::from(vec![b'x'; 100_000]))
            .await
            .unwrap();
        assert_eq!(answer.status, 429);
        assert_eq!(answer.retry_after.as_deref(), Some("2"));
        assert_eq!(answer.body, b"{}");
        let (head, body_bytes) = server.await.unwrap();
        assert!(head.contains("Expect: 100-continue"), "{head}");
        assert_eq!(body_bytes, 0, "the body was never sent");
    }
}
